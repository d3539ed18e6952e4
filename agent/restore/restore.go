package restore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/pgpage"
	"github.com/pgdr/pgdr/pkg/progress"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Target is the recovery target; at most one field is set.
type Target struct {
	Time      *time.Time
	LSN       *wal.LSN
	XID       string
	Name      string
	Immediate bool
}

func (t Target) set() int {
	n := 0
	for _, b := range []bool{t.Time != nil, t.LSN != nil, t.XID != "", t.Name != "", t.Immediate} {
		if b {
			n++
		}
	}
	return n
}

// Options select what Restore does.
type Options struct {
	BackupID string // an ID, "latest", or "" (newest before a time target, else latest)
	PGData   string
	Target   Target
	Action   string // promote, pause, shutdown (default pause, as PostgreSQL)
	Parallel int
	Force    bool   // restore into a non-empty directory, removing its contents
	Repo     string // read from this repository (default: the first holding the backup)
	// Archiving in the restored cluster: off unless ArchiveConfig (into
	// that configuration's repositories, none of them the source's unless
	// ReplacesSource) or ReplacesSource alone (the archive settings left
	// as restored: the copy takes over from the source). NoArchive is the
	// default said explicitly.
	NoArchive      bool
	ArchiveConfig  string
	ReplacesSource bool
	// TargetTimeline is the timeline recovery follows: "" (the archive's
	// history from the backup on, refused where it forks), "current",
	// "latest" or a number. See timeline.go.
	TargetTimeline string
	// Rejoin restores a member of the source cluster that will stream
	// from its primary (the daemon's re-clone): recovery_target_timeline
	// is PostgreSQL's 'latest', to follow the primary's later failovers,
	// and the archive settings are left as restored.
	Rejoin bool
	// RequireSigned refuses a backup whose manifest (or a manifest of its
	// chain) is not signed and verified (backup.Manifest.Signed): the
	// daemon's unattended re-clone, where nobody reads a warning.
	RequireSigned bool
	// TablespaceMap relocates tablespaces: OID or name → new location (an
	// absolute path, empty or absent). TablespaceMapAll puts every
	// tablespace TablespaceMap does not name at TablespaceMapAll/<name>
	// (<OID> when the backup records no usable name).
	TablespaceMap    map[string]string
	TablespaceMapAll string
	// WALDir (--waldir) makes pg_wal a link to this directory (absolute,
	// outside PGData, absent or empty) instead of a directory inside
	// PGData, as initdb -X does.
	WALDir string
	// Partial says whether recovery may use the WAL receiver's stream
	// partial of the newest timeline (wal-fetch --include-partial): by
	// default for a restore to the latest point, never with a target or
	// for a rejoining member (partial.go).
	Partial PartialMode
	// AgentPath and ConfigPath make up restore_command.
	AgentPath, ConfigPath string
	// Progress receives a progress line every few seconds while files are
	// written, and one when they are all written; nil for none.
	Progress io.Writer
}

// Deps are what Restore works with.
type Deps struct {
	Cfg        *config.Config
	Repos      []repo.Repo
	Identities []age.Identity
	Log        *slog.Logger
}

// Result reports a finished restore.
type Result struct {
	Backup       string   `json:"backup"`
	Chain        []string `json:"chain"`
	PGData       string   `json:"pgdata"`
	Files        int      `json:"files"`
	Bytes        int64    `json:"bytes"`
	ObjectsRead  int      `json:"objects_read"`
	Seconds      float64  `json:"seconds"`
	RecoveryConf []string `json:"recovery_settings"`
	// Timeline is the timeline recovery follows (0: PostgreSQL's 'latest',
	// for a re-cloned member).
	Timeline uint32 `json:"timeline,omitempty"`
	// Tablespaces are where the restore put each tablespace.
	Tablespaces []TablespaceResult `json:"tablespaces,omitempty"`
	// RestorePoint is where a --target-name restore recovers to.
	RestorePoint *RestorePoint `json:"restore_point,omitempty"`
	// IncludePartial says recovery may use a stream partial
	// (restore_command runs wal-fetch --include-partial); Partial is the
	// one it will get, past the archive's end, and PartialNote says why
	// there is none.
	IncludePartial bool                `json:"include_partial"`
	Partial        *walship.PartialUse `json:"partial,omitempty"`
	PartialNote    string              `json:"partial_note,omitempty"`
}

// Restore restores a backup into opts.PGData and configures recovery.
func Restore(ctx context.Context, d Deps, o Options) (*Result, error) {
	start := time.Now()
	if o.Target.set() > 1 {
		return nil, errors.New("give at most one recovery target (--target-time, --target-lsn, --target-xid, --target-name, --target-immediate)")
	}
	switch o.Action {
	case "":
		o.Action = "pause"
	case "promote", "pause", "shutdown":
	default:
		return nil, fmt.Errorf("--target-action %q: want promote, pause or shutdown", o.Action)
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	arch, err := archiveSettings(d, o)
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(o.PGData) {
		abs, err := filepath.Abs(o.PGData)
		if err != nil {
			return nil, err
		}
		o.PGData = abs
	}
	r, m, rp, err := pickBackup(ctx, d, o)
	if err != nil {
		return nil, err
	}
	// The repository is untrusted storage: a manifest naming anything
	// outside the target is refused before anything is written.
	if err := checkManifest(m); err != nil {
		return nil, err
	}
	// From here on m is the manifest as restored: a copy with every
	// tablespace at its final location, in the tablespace_map too.
	m, spcs, err := relocate(m, o)
	if err != nil {
		return nil, err
	}
	if err := checkUnsigned(m, spcs); err != nil {
		return nil, err
	}
	chain, err := backup.Chain(ctx, r, d.Cfg.Cluster, m.ID)
	if err != nil {
		return nil, err
	}
	if err := checkSigned(d, r, chain, o.RequireSigned); err != nil {
		return nil, err
	}
	if err := checkLocationParents(m, o.PGData); err != nil {
		return nil, err
	}
	if o.Partial, err = partialMode(o); err != nil {
		return nil, err
	}
	tli := uint32(0)
	var path map[uint32]bool
	var g *tlGraph
	if !o.Rejoin {
		if tli, g, err = followTimeline(ctx, d, m, o); err != nil {
			return nil, err
		}
		path = map[uint32]bool{}
		for _, s := range g.history(tli) {
			path[s.tli] = true
		}
	}
	if err := checkTarget(ctx, d, r, m, o.Target, path); err != nil {
		return nil, err
	}
	var partial *walship.PartialUse
	partialNote := ""
	if o.Partial == PartialOn {
		if partial, partialNote, err = planPartial(ctx, d, g, m, tli); err != nil {
			return nil, err
		}
	}
	plan, err := makePlan(chain)
	if err != nil {
		return nil, err
	}
	if err := checkIdentity(ctx, r, d, plan); err != nil {
		return nil, err
	}
	// Every location is checked before any is emptied: a refusal leaves
	// them all as they were. Only the locations found non-empty and
	// allowed to be emptied are emptied.
	var toEmpty []string
	if full, err := checkDir(o.PGData, o.Force, "empty it or pass --force"); err != nil {
		return nil, err
	} else if full {
		toEmpty = append(toEmpty, o.PGData)
	}
	for i, ts := range m.Tablespaces {
		force, hint := o.Force, "empty it, pass --force, or relocate the tablespace (--tablespace-map)"
		if !mayEmptyTablespace(o.PGData, ts, spcs[i].Relocated) {
			// The original location, which the data directory being
			// replaced does not link to: on the source's host, its
			// live tablespace. --force does not empty it.
			force = false
			hint = fmt.Sprintf("it is where the backup's server had the tablespace, and the data directory being replaced does not link to it, "+
				"so it may be that server's live tablespace: --force does not empty it; relocate it with --tablespace-map %s=DIR "+
				"(or --tablespace-map-all DIR), or empty it yourself", ts.OID)
		}
		full, err := checkDir(ts.Location, force, hint)
		if err != nil {
			return nil, fmt.Errorf("tablespace %s: %w", ts.OID, err)
		}
		if full {
			toEmpty = append(toEmpty, ts.Location)
		}
	}
	if o.WALDir != "" {
		o.WALDir = filepath.Clean(o.WALDir)
		full, err := checkWALDir(o.WALDir, o.PGData, m.Tablespaces, o.Force)
		if err != nil {
			return nil, err
		}
		if full {
			toEmpty = append(toEmpty, o.WALDir)
		}
	}
	for _, dir := range toEmpty {
		if err := emptyDir(dir); err != nil {
			return nil, err
		}
	}
	d.Log.Info("restoring", "backup", m.ID, "chain", chainIDs(chain), "pgdata", o.PGData, "files", len(plan))

	w := &writer{d: d, r: r, root: o.PGData, cluster: d.Cfg.Cluster, walDir: o.WALDir}
	defer w.roots.close()
	existed := existingLocations(m)
	if err := makeLocations(m, o.PGData); err != nil {
		return nil, err
	}
	if err := w.layout(m); err != nil {
		return nil, err
	}
	var total int64
	for _, p := range plan {
		switch {
		case len(p.steps) > 1:
			total += p.f.Size // a chain writes each page once
		case len(p.steps) == 1:
			total += p.steps[0].bytes
		}
	}
	stopProgress := progress.Start(o.Progress, "restore "+m.ID, func() int64 { return total }, w.written.Load, 0)
	err = w.files(ctx, plan, o.Parallel)
	stopProgress()
	if err != nil {
		return nil, err
	}
	settings, err := w.recovery(m, o, tli, arch)
	if err != nil {
		return nil, err
	}
	if err := w.syncDirs(m); err != nil {
		return nil, err
	}
	if err := chownToParent(o.PGData, m, o.WALDir, existed); err != nil {
		return nil, err
	}
	res := &Result{Backup: m.ID, Chain: chainIDs(chain), PGData: o.PGData, Files: len(plan),
		Bytes: w.bytes, ObjectsRead: w.objects, Seconds: time.Since(start).Seconds(), RecoveryConf: settings, Tablespaces: spcs}
	res.RestorePoint = rp
	res.Timeline = tli
	res.IncludePartial, res.Partial, res.PartialNote = o.Partial == PartialOn, partial, partialNote
	d.Log.Info("restore complete", "backup", m.ID, "files", res.Files, "bytes", res.Bytes, "objects_read", res.ObjectsRead,
		"seconds", fmt.Sprintf("%.1f", res.Seconds))
	return res, nil
}

func chainIDs(chain []*backup.Manifest) []string {
	ids := make([]string, len(chain))
	for i, m := range chain {
		ids[i] = m.ID
	}
	return ids
}

// pickBackup finds the repository and backup to restore. For a name
// target it also finds the restore point in the archived WAL (the newest
// backup that reaches it consistently, or a check of the backup given),
// restorepoint.go.
func pickBackup(ctx context.Context, d Deps, o Options) (repo.Repo, *backup.Manifest, *RestorePoint, error) {
	// The sync repositories first: they hold every backup; an async one
	// is a copy that may lag.
	repos := append(repo.Sync(d.Repos), repo.Async(d.Repos)...)
	if o.Repo != "" {
		repos = nil
		for _, r := range d.Repos {
			if r.Name == o.Repo {
				repos = []repo.Repo{r}
			}
		}
		if repos == nil {
			return repo.Repo{}, nil, nil, fmt.Errorf("--repo %q is not a configured repository", o.Repo)
		}
	}
	var errs []error
	if o.BackupID != "" && o.BackupID != "latest" {
		if !backup.ValidID(o.BackupID) {
			return repo.Repo{}, nil, nil, fmt.Errorf("%q is not a backup ID (like 20261126T081700F) or latest", o.BackupID)
		}
		for _, r := range repos {
			m, err := backup.LoadManifest(ctx, r, d.Cfg.Cluster, o.BackupID)
			if err == nil {
				rp, err := checkName(ctx, d, m, o.Target, o.TargetTimeline)
				if err != nil {
					return repo.Repo{}, nil, nil, err
				}
				return r, m, rp, nil
			}
			if !errors.Is(err, backup.ErrNoBackup) {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return repo.Repo{}, nil, nil, err
		}
		return repo.Repo{}, nil, nil, fmt.Errorf("no repository holds backup %s of cluster %s: %w", o.BackupID, d.Cfg.Cluster, backup.ErrNoBackup)
	}
	for _, r := range repos {
		all, err := backup.List(ctx, r, d.Cfg.Cluster)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Picked automatically: a backup on an abandoned branch is
		// skipped; if no other fits the target, it is picked and refused
		// with the reason (chooseTimeline).
		ms := all
		if o.BackupID == "" && !o.Rejoin {
			if ms, err = onPath(ctx, d, all, o.TargetTimeline); err != nil {
				return repo.Repo{}, nil, nil, err
			}
		}
		var pick *backup.Manifest
		switch {
		case o.BackupID == "" && o.Target.Time != nil:
			pick = newestFit(ms, all, func(m *backup.Manifest) bool { return !m.StopTime.After(*o.Target.Time) })
			if pick == nil && len(all) > 0 {
				return repo.Repo{}, nil, nil, fmt.Errorf("no backup ends before the target time %s (the oldest, %s, ends at %s)",
					o.Target.Time.UTC().Format(time.RFC3339Nano), all[0].ID, all[0].StopTime.Format(time.RFC3339Nano))
			}
		case o.BackupID == "" && o.Target.LSN != nil:
			pick = newestFit(ms, all, func(m *backup.Manifest) bool { return m.StopLSN <= *o.Target.LSN })
			if pick == nil && len(all) > 0 {
				return repo.Repo{}, nil, nil, fmt.Errorf("no backup ends at or before the target LSN %s (the oldest, %s, ends at %s)",
					*o.Target.LSN, all[0].ID, all[0].StopLSN)
			}
		case o.BackupID == "" && o.Target.Name != "" && len(ms) > 0:
			m, rp, err := pickByName(ctx, d, ms, o.Target.Name, o.TargetTimeline)
			if err != nil {
				return repo.Repo{}, nil, nil, err
			}
			return r, m, rp, nil
		default:
			if len(ms) > 0 {
				pick = ms[len(ms)-1]
			}
		}
		if pick != nil {
			rp, err := checkName(ctx, d, pick, o.Target, o.TargetTimeline)
			if err != nil {
				return repo.Repo{}, nil, nil, err
			}
			return r, pick, rp, nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return repo.Repo{}, nil, nil, err
	}
	return repo.Repo{}, nil, nil, fmt.Errorf("no repository holds any backup of cluster %s: %w", d.Cfg.Cluster, backup.ErrNoBackup)
}

// archiveClockSkew is the difference allowed between the database's clock
// and the object store's when checking a time target against the archive.
const archiveClockSkew = 2 * time.Second

// checkTarget refuses a target before the backup's end or beyond what the
// archive holds, before anything is written.
func checkTarget(ctx context.Context, d Deps, r repo.Repo, m *backup.Manifest, t Target, path map[uint32]bool) error {
	if t.Time == nil && t.LSN == nil {
		return nil
	}
	if t.Time != nil && t.Time.Before(m.StopTime) {
		return fmt.Errorf("target time %s is before the end of backup %s (%s): recovery cannot stop before a backup is consistent; choose an earlier backup (or omit --backup)",
			t.Time.UTC().Format(time.RFC3339Nano), m.ID, m.StopTime.Format(time.RFC3339Nano))
	}
	if t.LSN != nil && *t.LSN < m.StopLSN {
		return fmt.Errorf("target LSN %s is before the end of backup %s (%s)", t.LSN, m.ID, m.StopLSN)
	}
	// The newest archived segment on the backup's timeline or later (on
	// the history recovery follows, when chosen).
	var lastName string
	var lastTime time.Time
	err := r.Store.List(ctx, repo.WALPrefix(d.Cfg.Cluster), func(oi storage.ObjectInfo) error {
		base := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
		n, err := wal.ParseName(base)
		if err != nil || n.Kind != wal.KindSegment || n.Timeline < m.Timeline || path != nil && !path[n.Timeline] {
			return nil
		}
		if oi.ModTime.After(lastTime) {
			lastTime = oi.ModTime
		}
		if lastName == "" || base[8:] > lastName[8:] {
			lastName = base
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the archive: %w", err)
	}
	if lastName == "" {
		return fmt.Errorf("the archive in repository %s holds no WAL for timeline %d or later", r.Name, m.Timeline)
	}
	// Listings may give whole seconds (S3), and the object store's clock is
	// not the database's: allow for both before calling a target beyond
	// the archive (PostgreSQL itself still refuses to end recovery short
	// of a target it did not reach).
	if t.Time != nil && t.Time.After(lastTime.Truncate(time.Second).Add(time.Second+archiveClockSkew)) {
		return fmt.Errorf("target time %s is beyond what the archive covers (its newest segment, %s, was archived at %s)",
			t.Time.UTC().Format(time.RFC3339Nano), lastName, lastTime.UTC().Format(time.RFC3339Nano))
	}
	if t.LSN != nil {
		n, _ := wal.ParseName(lastName)
		end := wal.LSN((n.SegNo(m.SegmentSize) + 1) * m.SegmentSize)
		if *t.LSN > end {
			return fmt.Errorf("target LSN %s is beyond what the archive covers (it ends at %s, segment %s)", t.LSN, end, lastName)
		}
	}
	return nil
}

// step is one object that contributes to a restored file.
type step struct {
	backup  string
	kind    string
	objects []backup.Part // one whole object, or the parts of a large file
	bytes   int64         // written by this step: the whole file, or its changed pages
}

type filePlan struct {
	f     backup.File
	steps []step // oldest first: a full base, then deltas
}

// makePlan resolves, for every file of the newest backup, the objects that
// build it: the newest whole copy, then the deltas after it. It leaves out
// pgdr.promote-pending (health.PromotePendingFile), which an older backup
// may hold (backups leave it out since review 12): the source node's
// promotion guard, which the agent here would take for its own, from
// another boot, and fence the restored server on its next start.
func makePlan(chain []*backup.Manifest) ([]filePlan, error) {
	byBackup := make([]map[string]backup.File, len(chain))
	for i, m := range chain {
		byBackup[i] = make(map[string]backup.File, len(m.Files))
		for _, f := range m.Files {
			byBackup[i][f.Path] = f
		}
	}
	target := chain[len(chain)-1]
	plan := make([]filePlan, 0, len(target.Files))
	for _, f := range target.Files {
		if f.Path == health.PromotePendingFile {
			continue
		}
		var steps []step
		found := false
		for i := len(chain) - 1; i >= 0; i-- {
			e, ok := byBackup[i][f.Path]
			if !ok {
				return nil, fmt.Errorf("backup %s stores %s as changes, but %s does not hold the file: the chain is inconsistent", chain[i+1].ID, f.Path, chain[i].ID)
			}
			if objs := e.Objects(); len(objs) > 0 {
				n := e.Size
				if e.Kind != backup.KindFull {
					n = int64(e.Pages) * pgpage.BlockSize
				}
				steps = append([]step{{backup: chain[i].ID, kind: e.Kind, objects: objs, bytes: n}}, steps...)
			}
			if e.Kind == backup.KindFull {
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("no whole copy of %s in the chain of %s", f.Path, target.ID)
		}
		if f.Refs != nil {
			var ids []string
			for _, st := range steps {
				ids = append(ids, st.backup)
			}
			if !slices.Equal(ids, f.Refs) {
				return nil, fmt.Errorf("backup %s: %s is built from %v by the chain but its manifest says %v: the chain is inconsistent", target.ID, f.Path, ids, f.Refs)
			}
		}
		plan = append(plan, filePlan{f: f, steps: steps})
	}
	sort.Slice(plan, func(i, j int) bool { return plan[i].f.Size > plan[j].f.Size })
	return plan, nil
}

// checkIdentity opens one object of every backup the plan reads from, so
// that a wrong identity fails before the target is touched, also in a
// chain whose backups were encrypted to different keys (a key rotated
// between a full backup and its incrementals).
func checkIdentity(ctx context.Context, r repo.Repo, d Deps, plan []filePlan) error {
	seen := map[string]bool{}
	for _, p := range plan {
		for _, st := range p.steps {
			if seen[st.backup] || len(st.objects) == 0 {
				continue
			}
			seen[st.backup] = true
			if err := openObject(ctx, r, d, d.Cfg.Cluster+"/"+st.objects[0].Object); err != nil {
				return err
			}
		}
	}
	return nil
}

// openObject reads an object's headers (cleartext and age) with the
// restore's identities.
func openObject(ctx context.Context, r repo.Repo, d Deps, key string) error {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	or, err := objstream.NewReaderOpts(rc, r.DataReadOptions(key, d.Identities))
	if err != nil {
		return fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	return or.Close()
}

// checkDir makes sure dir is absent or empty or, with force, may be
// emptied: not a running server's data directory. full reports a
// non-empty dir that may be emptied; hint is how a refusal of a non-empty
// dir says to get past it.
func checkDir(dir string, force bool, hint string) (full bool, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(ents) == 0) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !force {
		return false, fmt.Errorf("%s is not empty (%d entries): restore refuses to overwrite it; %s", dir, len(ents), hint)
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
		return false, fmt.Errorf("%s has a postmaster.pid: stop the server first", dir)
	}
	return true, nil
}

// mayEmptyTablespace says whether --force may empty the location a
// tablespace is restored to: a new location the operator named
// (relocated), or the original one when the data directory being replaced
// links to it (pg_tblspc/<OID>: a restore over an earlier restore of the
// same layout). Otherwise the location is where the backup's server keeps
// the tablespace, on this host the source's live data.
func mayEmptyTablespace(pgdata string, ts backup.Tablespace, relocated bool) bool {
	if relocated {
		return true
	}
	dest, err := os.Readlink(filepath.Join(pgdata, "pg_tblspc", ts.OID))
	return err == nil && filepath.Clean(dest) == filepath.Clean(ts.Location)
}

// emptyDir removes what dir holds (checkDir allowed it).
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
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

type writer struct {
	d       Deps
	r       repo.Repo
	root    string
	cluster string
	walDir  string // pg_wal links there when set (Options.WALDir)
	pool    objstream.Pool
	roots   *roots // what the restore writes beneath (layout opens them)

	mu      sync.Mutex
	bytes   int64
	objects int
	written atomic.Int64 // bytes written into files so far (progress)
}

// layout makes the data directory, the tablespace links and the
// directories of the manifest (checkManifest accepted it). Everything
// below the data directory, a tablespace location or the --waldir
// directory is made beneath it (beneath.go): a symbolic link found on the
// way is refused, never followed.
func (w *writer) layout(m *backup.Manifest) error {
	if err := os.MkdirAll(w.root, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(w.root, 0o700); err != nil {
		return err
	}
	w.roots.close()
	w.roots = &roots{spc: map[string]*os.Root{}}
	var err error
	if w.roots.data, err = os.OpenRoot(w.root); err != nil {
		return err
	}
	// The pg_tblspc links first: the directories below them (pg_tblspc/
	// <OID>/PG_15_...) are made in the tablespace.
	if len(m.Tablespaces) > 0 {
		if err := mkdirBeneath(w.roots.data, "pg_tblspc", 0o700); err != nil {
			return err
		}
	}
	for _, ts := range m.Tablespaces {
		if !validOID(ts.OID) {
			return fmt.Errorf("tablespace OID %q is not a number", ts.OID)
		}
		if err := os.MkdirAll(ts.Location, 0o700); err != nil {
			return fmt.Errorf("tablespace %s at %s: %w", ts.OID, ts.Location, err)
		}
		if w.roots.spc[ts.OID], err = os.OpenRoot(ts.Location); err != nil {
			return fmt.Errorf("tablespace %s at %s: %w", ts.OID, ts.Location, err)
		}
		link := "pg_tblspc/" + ts.OID
		if err := w.roots.data.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("tablespace %s: %w", ts.OID, err)
		}
		if err := w.roots.data.Symlink(ts.Location, link); err != nil {
			return fmt.Errorf("tablespace %s: %w", ts.OID, err)
		}
	}
	if w.walDir != "" {
		if err := linkWALDir(w.root, w.walDir); err != nil {
			return err
		}
		if w.roots.wal, err = os.OpenRoot(w.walDir); err != nil {
			return fmt.Errorf("--waldir %s: %w", w.walDir, err)
		}
	}
	for _, d := range m.Dirs {
		r, rel := w.roots.place(d.Path)
		if err := mkdirBeneath(r, rel, os.FileMode(d.Mode).Perm()|0o700); err != nil {
			return err
		}
	}
	// PostgreSQL does not start without pg_wal, and a backup taken before
	// backups recorded a linked pg_wal (initdb -X) lacks it. Always made
	// here, as real directories inside the data directory (unless
	// --waldir linked pg_wal): a restore writes nothing outside its
	// target and tablespace locations, so the WAL of the restored cluster
	// stays in the data directory whatever the source's layout
	// (docs/backup.md).
	for _, d := range walDirs {
		r, rel := w.roots.place(d)
		if err := mkdirBeneath(r, rel, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// walDirs are the directories every restore makes (layout).
var walDirs = [...]string{"pg_wal", "pg_wal/archive_status"}

// files restores every file of the plan, parallel at a time. A finished
// file is handed to a pool of syncers that fsync and close it, so that the
// workers go on decoding while the disk catches up; every file is fsynced
// (or the restore fails) before files returns. The syncers also start the
// write-back of every 8 MiB of a large object as soon as it is written
// (sync_file_range), so that the final fsync of a 1 GiB segment does not
// begin with all of it still dirty in the page cache.
func (w *writer) files(ctx context.Context, plan []filePlan, parallel int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nsync := max(minSyncers, 2*parallel)
	s := &syncer{jobs: make(chan syncJob, nsync), cancel: cancel, w: w}
	s.wg.Add(nsync)
	for range nsync {
		go s.run(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, p := range interleave(plan) {
		g.Go(func() error { return w.file(gctx, p, s) })
	}
	err := g.Wait()
	close(s.jobs)
	s.wg.Wait()
	if s.err != nil {
		// A failed fsync cancels the workers: report it, not the
		// cancellation.
		return s.err
	}
	if err != nil {
		return err
	}
	// Cancelled after the last worker finished: the syncers skipped the
	// files still queued.
	return ctx.Err()
}

// smallFile is the size under which restoring a file is mostly waiting
// for the disk (creating the file, its fsync) rather than decoding.
const smallFile = 1 << 20

// interleave spreads the small files of plan evenly between the large ones
// (both kept largest first), so that their creation and fsyncs wait for the
// disk while the other workers decode, instead of all at the end with the
// CPUs idle.
func interleave(plan []filePlan) []filePlan {
	var large, small []filePlan
	for _, p := range plan {
		if p.f.Size >= smallFile {
			large = append(large, p)
		} else {
			small = append(small, p)
		}
	}
	if len(large) == 0 || len(small) == 0 {
		return plan
	}
	out := make([]filePlan, 0, len(plan))
	for i, p := range large {
		out = append(out, p)
		out = append(out, small[i*len(small)/len(large):(i+1)*len(small)/len(large)]...)
	}
	return out
}

// kickSize is how much of a file is written before that range is handed
// to write-back: the disk writes all along instead of in bursts, and the
// final fsyncs find little left to do.
const kickSize = 8 << 20

// kickWriter writes an object's data into its file and hands every
// kickSize bytes written to the syncers for early write-back.
type kickWriter struct {
	ctx context.Context
	s   *syncer
	fh  *os.File
	w   *io.OffsetWriter
	off int64 // start of the range not handed to write-back yet
	n   int64 // bytes written after off
	err error // the submit failure (the restore is being cancelled)

	written *atomic.Int64 // every byte written, for progress (nil: not counted)
}

func (k *kickWriter) Write(p []byte) (int, error) {
	n, err := k.w.Write(p)
	k.n += int64(n)
	k.progress(int64(n))
	k.kick(err)
	return n, err
}

// writeAt writes p at off, at or after everything written before (a
// maskedWriter leaving pages out), with the same accounting as Write.
func (k *kickWriter) writeAt(p []byte, off int64) error {
	n, err := k.fh.WriteAt(p, off)
	k.n = off + int64(n) - k.off
	k.progress(int64(n))
	k.kick(err)
	if err != nil {
		return err
	}
	return k.err
}

func (k *kickWriter) progress(n int64) {
	if k.written != nil {
		k.written.Add(n)
	}
}

// kick hands the range written since the last kick to write-back once it
// reaches kickSize.
func (k *kickWriter) kick(err error) {
	if err == nil && k.n >= kickSize {
		if err = k.s.submit(k.ctx, syncJob{fh: k.fh, off: k.off, n: k.n}); err != nil {
			k.err = err
		}
		k.off += k.n
		k.n = 0
	}
}

// minSyncers is the least number of syncers. An fsync mostly waits for the
// disk, not the CPU: a restore ends with a thousand small files, and with
// many fsyncs in flight the file system commits them together in one
// journal transaction instead of one after the other.
const minSyncers = 16

type syncJob struct {
	fh    *os.File
	path  string
	final bool  // fsync and close fh, then count size bytes restored
	size  int64 // final: the file's size
	off   int64 // !final: start write-back of [off, off+n)
	n     int64
}

type syncer struct {
	jobs   chan syncJob
	cancel context.CancelFunc
	w      *writer
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error // the first fsync or close failure
}

func (s *syncer) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *syncer) run(ctx context.Context) {
	defer s.wg.Done()
	for j := range s.jobs {
		if !j.final {
			if ctx.Err() == nil {
				startWriteback(j.fh, j.off, j.n)
			}
			continue
		}
		if ctx.Err() != nil {
			// The restore failed: only release the file.
			j.fh.Close()
			continue
		}
		if err := j.fh.Sync(); err != nil {
			j.fh.Close()
			s.fail(fmt.Errorf("fsync %s: %w", j.path, err))
			continue
		}
		if err := j.fh.Close(); err != nil {
			s.fail(fmt.Errorf("closing %s: %w", j.path, err))
			continue
		}
		s.w.mu.Lock()
		s.w.bytes += j.size
		s.w.mu.Unlock()
	}
}

// preallocate allocates the whole of a large file before it is written
// (fallocate). ext4 otherwise allocates as the pages are written back
// ("delayed allocation"), and that bookkeeping, done page by page, cost
// more CPU than copying the data into the page cache: 0.6 to 1.3 s of
// system time per GiB written on the development machine, against about
// 0.3 s with the blocks allocated at once. The restore writes every byte anyway, and
// a disk too small now fails at the start rather than part way through.
func preallocate(fh *os.File, size int64) error {
	rc, err := fh.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fallocate(int(fd), size) }); err != nil {
		return err
	}
	if ferr != nil {
		return fmt.Errorf("preallocating %d bytes: %w", size, ferr)
	}
	return nil
}

// startWriteback asks the kernel to start writing [off, off+n) of fh to
// disk without waiting for it (sync_file_range SYNC_FILE_RANGE_WRITE). It
// is only a head start for the fsync that follows: errors are ignored
// (the fsync reports any that matter), and so is a file closed meanwhile.
func startWriteback(fh *os.File, off, n int64) {
	rc, err := fh.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syncFileRange(int(fd), off, n)
	})
}

// submit hands a job to the syncers, or closes the file if the restore is
// being cancelled.
func (s *syncer) submit(ctx context.Context, j syncJob) error {
	select {
	case s.jobs <- j:
		return nil
	case <-ctx.Done():
		if j.final {
			j.fh.Close()
		}
		return ctx.Err()
	}
}

// file builds one file from its steps, checks each object's checksum,
// truncates to the recorded size and hands the file to the syncers, which
// fsync and close it.
func (w *writer) file(ctx context.Context, p filePlan, s *syncer) error {
	path := filepath.Join(w.root, filepath.FromSlash(p.f.Path))
	r, rel := w.roots.place(p.f.Path)
	fh, err := createBeneath(r, rel, os.FileMode(p.f.Mode).Perm()|0o600)
	if err != nil {
		return fmt.Errorf("restoring %s: %w", p.f.Path, err)
	}
	handed := false
	defer func() {
		if !handed {
			fh.Close()
		}
	}()
	if p.f.Size >= smallFile {
		if err := preallocate(fh, p.f.Size); err != nil {
			return fmt.Errorf("restoring %s: %w", p.f.Path, err)
		}
	}
	// A chain is applied newest first, each page written once (see
	// pageMask); a single step is written as it is.
	var mask *pageMask
	if len(p.steps) > 1 {
		mask = newPageMask(p.f.Size)
	}
	for i := range p.steps {
		st := p.steps[i]
		if mask != nil {
			st = p.steps[len(p.steps)-1-i]
		}
		if err := w.apply(ctx, fh, st, s, mask); err != nil {
			return fmt.Errorf("restoring %s: %w", p.f.Path, err)
		}
	}
	if err := fh.Truncate(p.f.Size); err != nil {
		return err
	}
	handed = true
	return s.submit(ctx, syncJob{fh: fh, path: path, final: true, size: p.f.Size})
}

// apply writes one step's objects into the file: a whole copy at each
// part's offset, or a delta's pages at their blocks. The parts of one step
// cover disjoint ranges, so they are written in parallel.
func (w *writer) apply(ctx context.Context, fh *os.File, st step, s *syncer, mask *pageMask) error {
	if len(st.objects) == 1 {
		return w.applyObject(ctx, fh, st.kind, st.objects[0], s, mask)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for _, o := range st.objects {
		g.Go(func() error { return w.applyObject(gctx, fh, st.kind, o, s, mask) })
	}
	return g.Wait()
}

func (w *writer) applyObject(ctx context.Context, fh *os.File, kind string, o backup.Part, s *syncer, mask *pageMask) error {
	key := w.cluster + "/" + o.Object
	rc, err := w.r.Store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("repository %s: %s: %w", w.r.Name, key, err)
	}
	defer rc.Close()
	or, err := w.pool.NewReaderOpts(rc, w.r.DataReadOptions(key, w.d.Identities))
	if err != nil {
		return fmt.Errorf("repository %s: object %s: %w", w.r.Name, key, err)
	}
	defer or.Close()
	w.mu.Lock()
	w.objects++
	w.mu.Unlock()
	if kind == backup.KindFull {
		// io.Copy uses the Reader's WriteTo: large writes straight from
		// its decode buffer.
		kw := &kickWriter{ctx: ctx, s: s, fh: fh, w: io.NewOffsetWriter(fh, o.Offset), off: o.Offset, written: &w.written}
		var dst io.Writer = kw
		if mask != nil {
			dst = &maskedWriter{k: kw, pos: o.Offset, mask: mask}
		}
		if _, err := io.Copy(dst, or); err != nil {
			if kw.err != nil {
				return kw.err
			}
			return fmt.Errorf("repository %s: object %s: %w", w.r.Name, key, err)
		}
	} else {
		rec := make([]byte, 4+pgpage.BlockSize)
		for {
			_, err := io.ReadFull(or, rec)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("repository %s: object %s: %w", w.r.Name, key, err)
			}
			blk := int64(binary.BigEndian.Uint32(rec[:4]))
			if mask != nil {
				if mask.skip(blk) {
					continue // a newer backup of the chain holds this page
				}
				mask.set(blk)
			}
			if _, err := fh.WriteAt(rec[4:], blk*pgpage.BlockSize); err != nil {
				return err
			}
			w.written.Add(pgpage.BlockSize)
		}
	}
	// The stream verified its own trailer at EOF; its checksum must also
	// be the one the manifest recorded (the right object, not just an
	// intact one).
	if err := o.CheckSum(or.Sum()); err != nil {
		return fmt.Errorf("repository %s: object %s: %w", w.r.Name, key, err)
	}
	return nil
}

// recovery writes backup_label, tablespace_map, recovery.signal and the
// recovery settings.
func (w *writer) recovery(m *backup.Manifest, o Options, tli uint32, arch []string) ([]string, error) {
	if err := fsutil.WriteFileSynced(filepath.Join(w.root, "backup_label"), m.BackupLabel, 0o600); err != nil {
		return nil, err
	}
	if len(m.TablespaceMap) > 0 {
		if err := fsutil.WriteFileSynced(filepath.Join(w.root, "tablespace_map"), m.TablespaceMap, 0o600); err != nil {
			return nil, err
		}
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	settings := []string{
		"restore_command = " + q(restoreCommand(o)),
	}
	if o.Rejoin {
		settings = append(settings, "recovery_target_timeline = 'latest'")
	} else {
		settings = append(settings, fmt.Sprintf("recovery_target_timeline = '%d'", tli))
	}
	t := o.Target
	switch {
	case t.Time != nil:
		settings = append(settings, "recovery_target_time = "+q(t.Time.UTC().Format("2006-01-02 15:04:05.999999")+"+00"))
	case t.LSN != nil:
		settings = append(settings, "recovery_target_lsn = "+q(t.LSN.String()))
	case t.XID != "":
		settings = append(settings, "recovery_target_xid = "+q(t.XID))
	case t.Name != "":
		settings = append(settings, "recovery_target_name = "+q(t.Name))
	case t.Immediate:
		settings = append(settings, "recovery_target = 'immediate'")
	}
	if t.set() > 0 {
		settings = append(settings, "recovery_target_action = "+q(o.Action))
	}
	settings = append(settings, arch...)
	auto := filepath.Join(w.root, "postgresql.auto.conf")
	old, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	body := string(old) + fmt.Sprintf("\n# recovery settings written by pgdr-agent restore of backup %s\n", m.ID) + strings.Join(settings, "\n") + "\n"
	if err := fsutil.WriteFileSynced(auto, []byte(body), 0o600); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileSynced(filepath.Join(w.root, "recovery.signal"), nil, 0o600); err != nil {
		return nil, err
	}
	return settings, nil
}

// syncDirs fsyncs every restored directory, deepest first, then the root's parent.
func (w *writer) syncDirs(m *backup.Manifest) error {
	dirs := []string{w.root}
	for _, d := range m.Dirs {
		dirs = append(dirs, filepath.Join(w.root, d.Path))
	}
	for _, d := range walDirs {
		dirs = append(dirs, filepath.Join(w.root, d))
	}
	if w.walDir != "" {
		dirs = append(dirs, w.walDir, filepath.Dir(w.walDir))
	}
	for _, ts := range m.Tablespaces {
		dirs = append(dirs, ts.Location)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	dirs = append(dirs, filepath.Dir(w.root))
	for _, d := range dirs {
		if err := fsutil.SyncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// chownToParent gives the restored files to the owner of PGDATA's parent
// when running as root: PostgreSQL runs as that user and refuses a data
// directory it does not own. walDir is the --waldir directory, or "".
// A tablespace location in existed (there before the restore) keeps its
// owner: only what the restore made in it is given away, so a location
// naming a directory of someone else's never changes hands.
func chownToParent(pgdata string, m *backup.Manifest, walDir string, existed map[string]bool) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, err := Owner(filepath.Dir(pgdata))
	if err != nil || uid == 0 {
		return err
	}
	if err := lchownTree(pgdata, int(uid), int(gid), true); err != nil {
		return err
	}
	for _, ts := range m.Tablespaces {
		if err := lchownTree(ts.Location, int(uid), int(gid), !existed[ts.Location]); err != nil {
			return err
		}
	}
	if walDir != "" {
		if err := lchownTree(walDir, int(uid), int(gid), true); err != nil {
			return err
		}
	}
	return nil
}

// lchownTree gives everything beneath dir, and dir itself when self is
// set, to uid:gid without following a symbolic link anywhere: the walk and
// every chown stay beneath dir (os.Root), and a link is chowned itself
// (the tablespace links), not its target.
func lchownTree(dir string, uid, gid int, self bool) error {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	return fs.WalkDir(r.FS(), ".", func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		if p == "." && !self {
			return nil
		}
		if err := r.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		return nil
	})
}

// Owner returns the user and group owning path (fsutil.OwnerOf, as the
// uint32 ids syscall.Credential takes).
func Owner(path string) (uid, gid uint32, err error) {
	o, err := fsutil.OwnerOf(path)
	if err != nil {
		return 0, 0, err
	}
	return uint32(o.UID), uint32(o.GID), nil
}
