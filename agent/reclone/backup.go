package reclone

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
)

// restoredStreamWait bounds the wait for a node restored from a backup to
// stream from the new primary. Streaming may be impossible (the reason
// the copy from the primary failed may also keep the WAL receiver out),
// and it only begins once the archive is replayed to its end: past this
// bound, a server in recovery that replays the archive is a rejoined
// replica, reported as not streaming.
const restoredStreamWait = 30 * time.Second

// restoreLatestBackup fills the empty (or partially copied) pgdata with
// the newest backup in the agent's repositories, with no recovery target:
// the node recovers to the end of the archive (recovery_target_timeline
// latest) and then follows the primary. It needs repositories and the
// identity that decrypts them; everything the restore checks is checked
// before pgdata is emptied of a partial copy.
func (r *Recloner) restoreLatestBackup(ctx context.Context, pgdata string) (*restore.Result, error) {
	cfg := r.cfg
	if len(cfg.Repos) == 0 {
		return nil, errors.New("no backup source: the agent configuration has no repos")
	}
	if cfg.Path == "" {
		return nil, errors.New("no backup source: the agent's configuration file is not known (restore_command needs it)")
	}
	ids, err := keys.Identities(cfg)
	if err != nil {
		return nil, fmt.Errorf("no backup source: %w", err)
	}
	cfgPath, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("the agent's own path (for restore_command): %w", err)
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return nil, err
	}
	uid, gid, err := restore.Owner(pgdata)
	if err != nil {
		return nil, err
	}
	if err := emptyDir(pgdata); err != nil {
		return nil, fmt.Errorf("removing the failed copy's files: %w", err)
	}
	r.log.Warn("rejoin: restoring the latest backup into the data directory", "pgdata", pgdata, "repos", len(repos))
	rctx, cancel := context.WithTimeout(ctx, recloneCopyWait)
	defer cancel()
	res, err := restore.Restore(rctx, restore.Deps{Cfg: cfg, Repos: repos, Identities: ids, Log: r.log}, restore.Options{
		BackupID: "latest", PGData: pgdata, Parallel: runtime.NumCPU(), AgentPath: self, ConfigPath: cfgPath, Rejoin: true,
		// Unattended: only a backup whose manifest a trusted key signed.
		RequireSigned: true,
	})
	if err != nil {
		return nil, err
	}
	// As root, restore gives the files to PGDATA's parent's owner: they
	// must be the data directory's.
	if os.Geteuid() == 0 {
		err := filepath.Walk(pgdata, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(uid), int(gid))
		})
		if err != nil {
			return nil, fmt.Errorf("restored backup %s, but giving its files to the data directory's owner failed: %w", res.Backup, err)
		}
	}
	r.log.Warn("rejoin: backup restored", "backup", res.Backup, "chain", res.Chain, "files", res.Files, "bytes", res.Bytes,
		"seconds", fmt.Sprintf("%.1f", res.Seconds))
	return res, nil
}

// emptyDir removes everything inside dir (not dir itself).
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

var restoreCommandLine = regexp.MustCompile(`^\s*restore_command\s*=`)

// ensureRestoreCommand makes restore_command in postgresql.auto.conf the
// one the restore wrote (wal-fetch with the absolute configuration path),
// after writeStandbyConfig: a node restored from a backup cannot reach
// consistency without the archive.
func (r *Recloner) ensureRestoreCommand(res *restore.Result) error {
	var cmd string
	for _, s := range res.RecoveryConf {
		if restoreCommandLine.MatchString(s) {
			cmd = s
		}
	}
	if cmd == "" {
		return errors.New("the restore wrote no restore_command")
	}
	auto := filepath.Join(r.cfg.Postgres.PGData, "postgresql.auto.conf")
	b, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if l != "" && !restoreCommandLine.MatchString(l) {
			lines = append(lines, l)
		}
	}
	lines = append(lines, cmd)
	if err := fsutil.WriteFileSynced(auto, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	r.pg.ChownLikePGData(auto)
	return nil
}

// waitRestoredReplica waits until the server restored from a backup
// streams from host:port; if it does not within restoredStreamWait, it
// settles for a server in recovery that replays the archive, and says so.
func (r *Recloner) waitRestoredReplica(ctx context.Context, host string, port uint16) (string, error) {
	got, err := r.deps.WaitStreaming(ctx, restoredStreamWait, host, port)
	if err == nil {
		return "streaming: " + got, nil
	}
	if ctx.Err() != nil {
		return got, err
	}
	conn, cerr := r.pg.Conn(ctx)
	if cerr != nil {
		return got, fmt.Errorf("%v; and connecting to the restored server: %w", err, cerr)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	var lsn, last string
	if qerr := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, ''),
		coalesce(pg_last_xact_replay_timestamp()::text, 'none')`).Scan(&inRecovery, &lsn, &last); qerr != nil {
		return got, fmt.Errorf("%v; and querying the restored server: %w", err, qerr)
	}
	if !inRecovery {
		return got, fmt.Errorf("the restored server is not in recovery (%v)", err)
	}
	return fmt.Sprintf("replaying from the archive, NOT streaming (%v): replayed up to %s, last replayed commit %s", err, lsn, last), nil
}
