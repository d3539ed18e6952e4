package reclone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/fsutil"
)

// recloneCopyWait bounds pg_basebackup: a fresh copy takes as long as the
// database is large, so only a stuck copy should hit it (a daemon shutdown
// cancels it sooner, and the old data directory is put back).
const recloneCopyWait = 12 * time.Hour

// oldDataSuffix marks a data directory moved aside by a reclone; the
// agent never deletes one (it may hold the only copy of commits the new
// primary never got): an operator removes it.
const oldDataSuffix = ".pgdr-old-"

// Deps is what a reclone needs from the rest of the agent. The orders
// own the recovery settings and the wait for streaming (the rewind path
// uses them too), the lease and fencing own the fence, the monitor owns
// the health checks: each arrives here as a func, so this package imports
// none of them. Reclone needs every field (Log may be nil).
type Deps struct {
	// Cfg is the agent's configuration: postgres.pgdata, node.name, and
	// for a restore the repos, encryption and the configuration's path.
	Cfg *config.Config
	// PG controls the local server: pg_basebackup, start, connections.
	PG  *pgctl.Controller
	Log *slog.Logger
	// ConfigFiles are the node's own configuration files, kept across a
	// rejoin (the copy brings the primary's).
	ConfigFiles []string
	// StreamWait bounds the wait for a fresh copy from the primary to
	// stream from it (the rewind path's bound).
	StreamWait time.Duration
	// HostPort is where a DSN connects (the first host); its error never
	// quotes the DSN.
	HostPort func(dsn string) (string, uint16, error)
	// PrimaryConninfo is dsn with node as its application_name.
	PrimaryConninfo func(dsn, node string) string
	// WriteStandbyConfig writes standby.signal and the recovery settings
	// (primary_conninfo for dsn, recovery_target_timeline) at epoch.
	WriteStandbyConfig func(epoch uint64, dsn string) error
	// WaitStreaming waits up to timeout until the local WAL receiver
	// streams from host:port, and says what it saw.
	WaitStreaming func(ctx context.Context, timeout time.Duration, host string, port uint16) (string, error)
	// Unfence clears the fence in memory and on disk.
	Unfence func() error
	// CheckNow runs one round of health checks at once and publishes it.
	CheckNow func(ctx context.Context)
}

// Recloner re-clones a node that cannot rejoin by pg_rewind (Reclone). It
// keeps no state between reclones; the orders serialize them.
type Recloner struct {
	deps Deps
	cfg  *config.Config
	pg   *pgctl.Controller
	log  *slog.Logger
}

// New returns a Recloner working with deps.
func New(deps Deps) *Recloner {
	r := &Recloner{deps: deps, cfg: deps.Cfg, pg: deps.PG, log: deps.Log}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

// Reclone rejoins this former primary with a fresh copy when pg_rewind
// cannot be used (why): neither data checksums nor wal_log_hints, or
// pg_rewind failed. PostgreSQL must be stopped. The old data directory is
// renamed aside (never deleted) and an empty one is filled by
// pg_basebackup from the new primary or, when that copy fails (the primary
// refuses replication connections, has no WAL sender free, cannot be
// reached), by a restore of the latest backup from the agent's
// repositories (backup.go). The node's own configuration files and
// the recovery settings are written as the rewind path does, and the
// server starts as a replica: streaming, or, after a restore, at least
// replaying the archive (the output says which). If neither copy can be
// made, the old directory is renamed back and the error names all three
// failures.
func (r *Recloner) Reclone(ctx context.Context, epoch uint64, primary, dsn string, why error) (string, error) {
	pgdata := r.cfg.Postgres.PGData
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("rejoin: pg_rewind cannot be used (%v), and the fresh copy from %s failed: %w", why, primary, err)
	}
	host, port, err := r.deps.HostPort(dsn)
	if err != nil {
		return fail(err)
	}
	if pgctl.PostmasterRunning(pgdata) {
		return fail(errors.New("PostgreSQL is running; it must be stopped before its data directory is replaced"))
	}
	r.log.Warn("rejoin: pg_rewind cannot be used; making a fresh copy of the new primary", "primary", primary, "why", why)
	saved := readConfigFiles(pgdata, r.deps.ConfigFiles)
	fc, err := r.freshCopy(ctx, dsn, host, port, true)
	if err != nil {
		var ce *copyErrors
		if errors.As(err, &ce) {
			return "", fmt.Errorf("rejoin: pg_rewind cannot be used (%v); the fresh copy from %s failed: %v; and %v", why, primary, ce.copy, err)
		}
		if fc != nil {
			err = fmt.Errorf("%w (the new data directory is filled; the old data is kept at %s)", err, fc.old)
		}
		return fail(err)
	}
	var kept string
	if fc.restored != nil {
		r.log.Warn("rejoin: restored from the latest backup; the old data directory is kept", "backup", fc.restored.Backup, "old_data", fc.old)
		kept = fmt.Sprintf("restored from backup %s (chain %v; the fresh copy from %s failed: %s), old data kept at %s",
			fc.restored.Backup, fc.restored.Chain, primary, pgctl.Tail(fc.copyErr.Error(), 500), fc.old)
	} else {
		r.log.Warn("rejoin: recloned from the new primary; the old data directory is kept", "primary", primary, "old_data", fc.old)
		kept = fmt.Sprintf("recloned from %s, old data kept at %s", primary, fc.old)
	}
	after := func(step string, err error) (string, error) {
		return "", fmt.Errorf("rejoin: %s, but %s failed: %w", kept, step, err)
	}
	if err := r.putBackConfigFiles(saved); err != nil {
		return after("restoring the configuration files", err)
	}
	if err := r.deps.WriteStandbyConfig(epoch, dsn); err != nil {
		return after("writing the recovery settings", err)
	}
	if fc.restored != nil {
		// Recovery from a backup cannot do without the archive.
		if err := r.ensureRestoreCommand(fc.restored); err != nil {
			return after("writing restore_command", err)
		}
	}
	if err := r.deps.Unfence(); err != nil {
		return after("unfencing", err)
	}
	if err := r.pg.Start(ctx); err != nil {
		return after("starting PostgreSQL", err)
	}
	var got string
	if fc.restored != nil {
		got, err = r.waitRestoredReplica(ctx, host, port)
	} else {
		got, err = r.deps.WaitStreaming(ctx, r.deps.StreamWait, host, port)
	}
	r.deps.CheckNow(ctx)
	if err != nil {
		return got, fmt.Errorf("rejoin: %s: %w", kept, err)
	}
	return fmt.Sprintf("%s (pg_rewind not used: %v)%s: %s", kept, why, fc.note, got), nil
}

// readConfigFiles reads the node's configuration files kept across a
// rejoin (files, Deps.ConfigFiles) from pgdata.
func readConfigFiles(pgdata string, files []string) map[string][]byte {
	saved := map[string][]byte{}
	for _, f := range files {
		if b, err := os.ReadFile(filepath.Join(pgdata, f)); err == nil {
			saved[f] = b
		}
	}
	return saved
}

// putBackConfigFiles writes the saved configuration files over the copied
// primary's, as rejoin does after pg_rewind.
func (r *Recloner) putBackConfigFiles(saved map[string][]byte) error {
	for f, b := range saved {
		p := filepath.Join(r.cfg.Postgres.PGData, f)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
		r.pg.ChownLikePGData(p)
	}
	return nil
}

// freshCopied says how the data directory was refilled.
type freshCopied struct {
	old, note string          // where the old data is kept; a note for the output
	restored  *restore.Result // set when a backup was restored instead of a copy
	copyErr   error           // why the copy from the primary failed (restored != nil)
}

// copyErrors is freshCopy's error when neither the copy from the primary
// nor the backup restore worked; its text is the restore's failure and
// the old directory's fate, copy is the pg_basebackup failure.
type copyErrors struct {
	copy error
	rest error
}

func (e *copyErrors) Error() string   { return e.rest.Error() }
func (e *copyErrors) Unwrap() []error { return []error{e.copy, e.rest} }

// copyFromPrimary moves the data directory aside and fills a new one with
// pg_basebackup from dsn (no backup fallback). It returns where the old
// data is kept and a note for the output; on failure the old directory is
// back in place.
func (r *Recloner) copyFromPrimary(ctx context.Context, dsn, host string, port uint16) (old, note string, err error) {
	fc, err := r.freshCopy(ctx, dsn, host, port, false)
	if fc != nil {
		old, note = fc.old, fc.note
	}
	return old, note, err
}

// freshCopy moves the data directory aside and fills a new one with
// pg_basebackup from dsn or, if that fails and fromBackup, with the
// latest backup. On failure the old directory is back in place (and fc
// is nil), except when only removing the copied promotion guard record
// or carrying the fenced marker over failed.
func (r *Recloner) freshCopy(ctx context.Context, dsn, host string, port uint16, fromBackup bool) (*freshCopied, error) {
	pgdata, err := filepath.EvalSymlinks(r.cfg.Postgres.PGData) // a symlinked PGDATA keeps its link
	if err != nil {
		return nil, fmt.Errorf("the data directory: %w", err)
	}
	if err := copyable(pgdata); err != nil {
		return nil, err
	}
	fc := &freshCopied{}
	if dst, err := os.Readlink(filepath.Join(pgdata, "pg_wal")); err == nil {
		fc.note = fmt.Sprintf("; note: the old pg_wal was a link to %s (kept with the old data), the copy keeps its WAL inside the data directory", dst)
	}
	fc.old, err = moveAside(pgdata, time.Now())
	if err != nil {
		return nil, err
	}
	r.log.Warn("rejoin: data directory moved aside", "pgdata", pgdata, "old_data", fc.old)
	cctx, cancel := context.WithTimeout(ctx, recloneCopyWait)
	out, err := r.basebackup(cctx, pgdata, dsn)
	cancel()
	switch {
	case err == nil:
		r.log.Info("rejoin: pg_basebackup done", "output", pgctl.Tail(out, 500))
	case !fromBackup || ctx.Err() != nil: // no fallback, or the daemon is stopping
		err = fmt.Errorf("pg_basebackup from %s:%d: %w", host, port, err)
		if rerr := restoreAside(pgdata, fc.old); rerr != nil {
			return nil, fmt.Errorf("%w; AND putting the old data directory back failed: %v (the old data is at %s)", err, rerr, fc.old)
		}
		r.log.Warn("rejoin: the fresh copy failed; the old data directory is back in place", "pgdata", pgdata, "err", err)
		return nil, fmt.Errorf("%w; the old data directory is back in place at %s", err, pgdata)
	default:
		fc.copyErr = fmt.Errorf("pg_basebackup from %s:%d: %w", host, port, err)
		r.log.Warn("rejoin: the fresh copy from the new primary failed; trying the latest backup", "err", fc.copyErr)
		res, rerr := r.restoreLatestBackup(ctx, pgdata)
		if rerr != nil {
			rerr = fmt.Errorf("restoring the latest backup instead failed: %w", rerr)
			if aerr := restoreAside(pgdata, fc.old); aerr != nil {
				return nil, &copyErrors{fc.copyErr, fmt.Errorf("%w; AND putting the old data directory back failed: %v (the old data is at %s)", rerr, aerr, fc.old)}
			}
			r.log.Warn("rejoin: no fresh copy could be made; the old data directory is back in place", "pgdata", pgdata, "copy_err", fc.copyErr, "restore_err", rerr)
			return nil, &copyErrors{fc.copyErr, fmt.Errorf("%w; the old data directory is back in place at %s", rerr, pgdata)}
		}
		fc.restored = res
	}
	// pg_basebackup copies the primary's promotion guard record (a
	// promotion of its own may have been pending): the agent here would
	// take it for this node's, from another boot, and fence the node on
	// its next start. This node is not promoting (its server was stopped
	// before it was moved aside); its own record, if any, stays with the
	// old data.
	if removed, err := health.RemovePromotePending(pgdata); err != nil {
		return fc, fmt.Errorf("removing the primary's promotion guard record from the copy: %w", err)
	} else if removed {
		r.log.Info("rejoin: removed the primary's promotion guard record from the copy", "path", health.PromotePendingPath(pgdata))
	}
	// The node stays marked fenced until it is configured as a replica.
	if b, err := os.ReadFile(health.FencedPath(fc.old)); err == nil {
		p := health.FencedPath(pgdata)
		if err := fsutil.WriteFileSynced(p, b, 0o600); err != nil {
			return fc, fmt.Errorf("carrying the fenced marker over: %w", err)
		}
		r.pg.ChownLikePGData(p)
	}
	return fc, nil
}

// basebackup runs pg_basebackup into the empty pgdata as the data
// directory's owner. Its error never quotes the DSN (it may hold a
// password).
func (r *Recloner) basebackup(ctx context.Context, pgdata, dsn string) (string, error) {
	cmd, err := r.pg.Command(ctx, "pg_basebackup", "-D", pgdata, "-d", r.deps.PrimaryConninfo(dsn, r.cfg.Node.Name),
		"-X", "stream", "-c", "fast", "-R", "--no-password")
	if err != nil {
		return "", err
	}
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%v: %s", err, pgctl.Tail(string(b), 1500))
	}
	return string(b), nil
}

// copyable refuses what a plain pg_basebackup into a renamed-aside
// directory cannot handle: a data directory that is a mount point (it
// cannot be renamed) or one with tablespaces (the copy would have to go
// where the old ones still are).
func copyable(pgdata string) error {
	fi, err := os.Stat(pgdata)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", pgdata)
	}
	pfi, err := os.Stat(filepath.Dir(pgdata))
	if err != nil {
		return err
	}
	st, ok1 := fi.Sys().(*syscall.Stat_t)
	pst, ok2 := pfi.Sys().(*syscall.Stat_t)
	if ok1 && ok2 && st.Dev != pst.Dev {
		return fmt.Errorf("%s is a mount point: it cannot be moved aside for a fresh copy", pgdata)
	}
	ts, err := os.ReadDir(filepath.Join(pgdata, "pg_tblspc"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(ts) > 0 {
		return fmt.Errorf("%s has %d tablespace(s): a fresh copy would need them relocated (pg_basebackup --tablespace-mapping), which the agent does not do", pgdata, len(ts))
	}
	return nil
}

// moveAside renames pgdata to pgdata.pgdr-old-<UTC time> in the same
// parent (atomic, nothing copied or deleted) and creates an empty pgdata
// with the old one's owner and mode 0700. It returns the old data's path.
func moveAside(pgdata string, now time.Time) (string, error) {
	pgdata = filepath.Clean(pgdata)
	fi, err := os.Stat(pgdata)
	if err != nil {
		return "", err
	}
	base := pgdata + oldDataSuffix + now.UTC().Format("20060102T150405Z")
	old := base
	// Rename replaces an empty directory: never aim at an existing name.
	for i := 2; ; i++ {
		if _, err := os.Lstat(old); errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return "", err
		}
		old = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(pgdata, old); err != nil {
		return "", fmt.Errorf("moving the data directory aside: %w", err)
	}
	if err := mkdirLike(pgdata, fi); err != nil {
		if rerr := os.Rename(old, pgdata); rerr != nil {
			return "", fmt.Errorf("creating the new data directory: %v; AND moving the old one back failed: %v (the old data is at %s)", err, rerr, old)
		}
		return "", fmt.Errorf("creating the new data directory: %w", err)
	}
	// Best effort: the rename is done either way, and a disk that cannot
	// sync a directory fails the copy's own fsyncs next.
	_ = fsutil.SyncDir(filepath.Dir(pgdata))
	return old, nil
}

// mkdirLike creates dir with mode 0700 and like's owner.
func mkdirLike(dir string, like os.FileInfo) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask
		return err
	}
	if st, ok := like.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	return nil
}

// restoreAside undoes moveAside after a failed copy: it removes what the
// copy left in pgdata (only the copy's files, never the old data) and
// renames old back. A partial copy that cannot be removed is renamed to
// pgdata.pgdr-failed-<time> so the old data can still go back.
func restoreAside(pgdata, old string) error {
	pgdata = filepath.Clean(pgdata)
	if _, err := os.Lstat(old); err != nil {
		return fmt.Errorf("the old data directory: %w", err) // nothing removed
	}
	if err := os.RemoveAll(pgdata); err != nil {
		failed := pgdata + ".pgdr-failed-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(pgdata, failed); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("removing the partial copy: %v; renaming it aside: %v", err, rerr)
		}
	}
	if err := os.Rename(old, pgdata); err != nil {
		return fmt.Errorf("moving %s back to %s: %w", old, pgdata, err)
	}
	_ = fsutil.SyncDir(filepath.Dir(pgdata)) // best effort, as in moveAside
	return nil
}
