package backup

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/pgcontrol"
	"github.com/pgdr/pgdr/pkg/pgpage"
	"github.com/pgdr/pgdr/pkg/progress"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Options select what Take does.
type Options struct {
	Type         string // full, diff, incr
	FromStandby  bool
	Label        string
	Parallel     int           // files read at once (default: CPU count)
	AllowCorrupt bool          // finish even when page checksums fail
	PrimaryDSN   string        // standby backups: switch WAL on the primary so the last segment is archived
	WALTimeout   time.Duration // how long to wait for the WAL the backup needs (default DefaultWALTimeout)
	Progress     io.Writer     // progress lines, nil for none
	MaxRate      int64         // bytes per second read from the data directory (0 = unlimited), to spare the server's I/O
	PartSize     int64         // files larger than this are stored as parts read in parallel (default PartSize)
	// Checksum is the hash of every object's plaintext, in its trailer
	// and in the manifest: objstream.ChecksumBLAKE3 or
	// objstream.ChecksumSHA256 (a FIPS-approved hash; also what pgdr
	// wrote before BLAKE3, and all it can restore). Empty means
	// DefaultChecksum().
	Checksum objstream.Checksum
	// Tier is recorded in the manifest: the policy tier the backup is
	// taken for, which retention rules go by ("" for none).
	Tier string
}

// Deps are what Take works with.
type Deps struct {
	Cfg        *config.Config
	Repos      []repo.Repo
	Recipients []age.Recipient
	Log        *slog.Logger
}

// DefaultChecksum is the hash backups record when none is asked for:
// BLAKE3 on amd64, where github.com/zeebo/blake3 has AVX2 and SSE4.1 code
// and hashes about twice as fast as SHA-256 with the SHA extensions;
// SHA-256 elsewhere (arm64 has SHA-256 instructions, and the BLAKE3
// library only portable Go there).
func DefaultChecksum() objstream.Checksum {
	if runtime.GOARCH == "amd64" {
		return objstream.ChecksumBLAKE3
	}
	return objstream.ChecksumSHA256
}

// ErrCorruptPages means page checksums failed; the backup was not recorded.
var ErrCorruptPages = errors.New("corrupt pages found")

type server struct {
	conn          *pgx.Conn
	version       int
	inRecovery    bool
	checksums     bool
	segSize       uint64
	sysid         uint64
	dataDirectory string
}

func inspect(ctx context.Context, conn *pgx.Conn) (*server, error) {
	s := &server{conn: conn}
	var checksums, segSize, sysid string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, pg_is_in_recovery(),
		current_setting('data_checksums'), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
		(SELECT system_identifier::text FROM pg_control_system()), current_setting('data_directory')`).
		Scan(&s.version, &s.inRecovery, &checksums, &segSize, &sysid, &s.dataDirectory)
	if err != nil {
		return nil, fmt.Errorf("inspecting the server: %w", err)
	}
	s.checksums = checksums == "on"
	if s.segSize, err = strconv.ParseUint(segSize, 10, 64); err != nil {
		return nil, fmt.Errorf("wal_segment_size %q: %w", segSize, err)
	}
	if s.sysid, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return nil, fmt.Errorf("system identifier %q: %w", sysid, err)
	}
	return s, nil
}

// Take runs one backup and returns its manifest once the manifest is
// written to every repository (the moment the backup exists).
func Take(ctx context.Context, d Deps, o Options) (*Manifest, error) {
	if o.Type == "" {
		o.Type = TypeFull
	}
	// A backup is written to the sync repositories; the async ones get it
	// from the daemon's copier (agent/repocopy), queued below.
	if sync := repo.Sync(d.Repos); len(sync) < len(d.Repos) {
		if len(sync) == 0 {
			return nil, fmt.Errorf("backup: every repository given (%s) is async: a backup is written to sync repositories and copied to async ones", strings.Join(repoNames(d.Repos), ", "))
		}
		d.Repos = sync
	}
	if o.Type != TypeFull && o.Type != TypeDiff && o.Type != TypeIncr {
		return nil, fmt.Errorf("unknown backup type %q (full, diff or incr)", o.Type)
	}
	if o.Parallel <= 0 {
		o.Parallel = runtime.NumCPU()
	}
	if o.WALTimeout <= 0 {
		o.WALTimeout = DefaultWALTimeout
	}
	if o.PartSize <= 0 {
		o.PartSize = PartSize
	}
	// Load the signing key first: a backup whose manifest cannot be
	// signed is refused by readers, so it fails before any work.
	signer, err := keys.Signer(d.Cfg)
	if err != nil {
		return nil, err
	}
	switch o.Checksum {
	case "":
		o.Checksum = DefaultChecksum()
	case objstream.ChecksumBLAKE3, objstream.ChecksumSHA256:
	default:
		return nil, fmt.Errorf("unknown checksum %q (blake3 or sha256)", o.Checksum)
	}
	if o.PartSize%pgpage.BlockSize != 0 {
		return nil, fmt.Errorf("part size %d is not a multiple of the %d-byte page", o.PartSize, pgpage.BlockSize)
	}
	log := d.Log
	conn, err := pgx.Connect(ctx, d.Cfg.Postgres.DSN)
	if err != nil {
		// Never the password: the error ends up in run records and logs.
		return nil, fmt.Errorf("connecting to %s: %w", conninfo.WithoutPassword(d.Cfg.Postgres.DSN), err)
	}
	defer conn.Close(context.Background())
	srv, err := inspect(ctx, conn)
	if err != nil {
		return nil, err
	}
	if err := checkColocated(d.Cfg.Postgres.PGData, srv.dataDirectory); err != nil {
		return nil, err
	}
	if srv.inRecovery && !o.FromStandby {
		return nil, errors.New("the server is a standby: pass --from-standby to back it up")
	}
	if !srv.inRecovery && o.FromStandby {
		return nil, errors.New("--from-standby was given but the server is not in recovery")
	}
	if srv.version < 150000 {
		return nil, fmt.Errorf("PostgreSQL %d is not supported (15 or later)", srv.version)
	}

	// The ID is reserved in every repository before anything is written
	// under it, so that a concurrent backup (another process, another
	// node) never shares it and a failed backup's clean-up deletes only
	// its own objects. It is reserved before the parent is chosen: expiry
	// (agent/expire) expires no backup while a reservation is fresh.
	resv, err := reserveID(ctx, d.Repos, d.Cfg.Cluster, d.Cfg.Node.Name, time.Now, log)
	if err != nil {
		return nil, err
	}
	defer resv.release(context.WithoutCancel(ctx))
	// Recorded as started before pg_backup_start settles the WAL it
	// needs, and its reservation kept fresh while it runs: see the
	// protocol with expiry in expiry.go.
	if err := recordStarted(ctx, d.Repos, d.Cfg.Cluster, resv.stamp); err != nil {
		return nil, err
	}
	defer resv.keepFresh(ctx, ReservationRefresh, log)()
	cands, reason, err := parentCandidates(ctx, d.Repos, d.Cfg.Cluster, o.Type, srv)
	if err != nil {
		return nil, err
	}
	typ := o.Type
	if len(cands) == 0 {
		typ = TypeFull
	}
	m := &Manifest{
		Format: ManifestFormat, Type: typ, Label: o.Label, Tier: o.Tier, Cluster: d.Cfg.Cluster, Node: d.Cfg.Node.Name,
		SystemIdentifier: srv.sysid, PGVersion: srv.version, FromStandby: srv.inRecovery,
		DataChecksums: srv.checksums, SegmentSize: srv.segSize, StartTime: time.Now().UTC(),
	}
	if typ != o.Type {
		m.TypeReason = reason
		log.Warn("taking a full backup", "requested", o.Type, "reason", reason)
	}
	if srv.inRecovery && o.PrimaryDSN != "" && len(cands) > 0 {
		awaitCheckpoint(ctx, conn, o.PrimaryDSN, cands[0].StopLSN, o.WALTimeout, log)
	}
	parent, err := startBackup(ctx, conn, d.Cfg.Postgres.PGData, m, resv.stamp, o, cands, log)
	if err != nil {
		return nil, err
	}
	id := m.ID
	log = log.With("backup", id, "type", m.Type)
	log.Info("backup started", "start_lsn", m.StartLSN, "parent", m.Parent, "from_standby", m.FromStandby)

	w, err := walk(d.Cfg.Postgres.PGData)
	if err != nil {
		return nil, err
	}
	m.Dirs, m.Tablespaces = w.dirs, w.tablespaces
	if err := nameTablespaces(ctx, conn, m.Tablespaces); err != nil {
		return nil, err
	}
	var parentFiles map[string]File
	var threshold wal.LSN
	if parent != nil {
		parentFiles = make(map[string]File, len(parent.Files))
		for _, f := range parent.Files {
			parentFiles[f.Path] = f
		}
		threshold = parent.StartLSN
	}
	c := &copier{d: d, m: m, srv: srv, threshold: threshold, parentFiles: parentFiles, pool: &objstream.Pool{},
		maxRate: o.MaxRate, start: time.Now(), partSize: o.PartSize, checksum: o.Checksum}
	for _, f := range w.files {
		c.total.Add(f.info.Size())
	}
	// Until the manifest is written this is not a backup: on any failure
	// remove what was uploaded.
	complete := false
	defer func() {
		if !complete {
			c.abandon(ctx)
		}
	}()
	stopProgress := progress.Start(o.Progress, "backup "+c.m.ID, c.total.Load, c.done.Load, 0)
	// global/pg_control is copied alone, after every other file: a backup
	// of a standby ends at the copied pg_control's minRecoveryPoint, so no
	// file may be read after it (pg_basebackup sends it last for the same
	// reason).
	var control []walkFile
	rest := w.files[:0:0]
	for _, f := range w.files {
		if f.rel == "global/pg_control" {
			control = append(control, f)
		} else {
			rest = append(rest, f)
		}
	}
	files, err := c.copyAll(ctx, rest, o.Parallel)
	if err == nil && len(control) > 0 {
		var last []File
		last, err = c.copyAll(ctx, control, 1)
		files = append(files, last...)
		sortFiles(files)
	}
	stopProgress()
	if err != nil {
		return nil, err
	}
	m.Files = files

	var stopLSN string
	var label, spcmap []byte
	// wait_for_archive => false: PostgreSQL checks the archiver only once a
	// second; waitWAL below polls the repositories themselves, which is
	// what counts. (On a primary the segment switch happens either way.)
	if err := conn.QueryRow(ctx, "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)").Scan(&stopLSN, &label, &spcmap); err != nil {
		return nil, fmt.Errorf("pg_backup_stop: %w", err)
	}
	m.StopTime = time.Now().UTC()
	if m.StopLSN, err = wal.ParseLSN(stopLSN); err != nil {
		return nil, err
	}
	m.BackupLabel, m.TablespaceMap = label, spcmap
	startTLI := m.Timeline
	if m.Timeline, err = labelTimeline(label); err != nil {
		return nil, err
	}
	if startTLI != 0 && startTLI != m.Timeline {
		return nil, fmt.Errorf("backup_label says START TIMELINE %d, pg_backup_start's checkpoint said %d: the parent chosen for it may be wrong", m.Timeline, startTLI)
	}
	if srv.inRecovery {
		var still bool
		var tli uint32
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())").Scan(&still, &tli); err != nil {
			return nil, err
		}
		if !still || tli != m.Timeline {
			return nil, fmt.Errorf("the standby was promoted or switched timeline (%d → %d) during the backup; it is not usable", m.Timeline, tli)
		}
	}
	segs := wal.SegmentsBetween(m.Timeline, m.StartLSN, m.StopLSN, srv.segSize)
	m.WALStart, m.WALStop = segs[0], segs[len(segs)-1]
	log.Info("backup stopped", "stop_lsn", m.StopLSN, "wal_needed", m.WALStart+".."+m.WALStop)

	if len(c.corrupt) > 0 {
		m.CorruptPages = c.corrupt
		for _, p := range c.corrupt {
			log.Error("corrupt page", "file", p.Path, "block", p.Block, "err", p.Error)
		}
		if !o.AllowCorrupt {
			first := c.corrupt[0]
			return nil, fmt.Errorf("%w: %d page(s), first in %s block %d (%s); the backup was not recorded (pass --allow-corrupt to keep it anyway)",
				ErrCorruptPages, len(c.corrupt), first.Path, first.Block, first.Error)
		}
	}
	if srv.inRecovery && o.PrimaryDSN != "" {
		if err := switchWAL(ctx, o.PrimaryDSN); err != nil {
			log.Warn("switching WAL on the primary", "err", err)
		}
	}
	archiver := func(ctx context.Context) string { return archiverState(ctx, conn, srv.inRecovery, o.PrimaryDSN) }
	if err := waitWAL(ctx, d, segs, o.WALTimeout, archiver, log); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		m.DatabaseBytes += f.Size
		m.StoredBytes += f.Stored
	}
	m.DurationSeconds = time.Since(m.StartTime).Seconds()
	// The parent chain must still be there and not being expired: an
	// expiry running now may be removing it (see ClaimParent).
	if m.Parent != "" {
		if err := ClaimParent(ctx, d.Repos, m.Cluster, m.Parent, m.ID); err != nil {
			return nil, fmt.Errorf("%s backup: %w", m.Type, err)
		}
	}
	for i, r := range d.Repos {
		if err := saveManifest(ctx, r, m, signer); err != nil {
			// A manifest already written elsewhere would make the backup
			// exist in some repositories only: take it back.
			for _, done := range d.Repos[:i] {
				_ = done.Store.Delete(context.WithoutCancel(ctx), manifestKey(m.Cluster, m.ID))
			}
			return nil, err
		}
	}
	complete = true
	if err := queue.Enqueue(d.Cfg, queue.Entry{Kind: queue.KindBackup, Key: m.ID, Size: m.StoredBytes, Objects: len(m.Files) + 1}); err != nil {
		log.Warn("queueing the copy to the async repositories failed; the daemon's reconcile will copy it", "err", err)
	}
	log.Info("backup complete", "files", len(m.Files), "database_bytes", m.DatabaseBytes, "stored_bytes", m.StoredBytes,
		"seconds", fmt.Sprintf("%.1f", m.DurationSeconds))
	return m, nil
}

func checkColocated(pgdata, serverDir string) error {
	a, err1 := filepath.EvalSymlinks(pgdata)
	b, err2 := filepath.EvalSymlinks(serverDir)
	if err1 != nil {
		return fmt.Errorf("postgres.pgdata %s: %w", pgdata, err1)
	}
	if err2 != nil || a != b {
		return fmt.Errorf("the server's data_directory is %s but postgres.pgdata is %s: backups read files directly, so the agent must run next to the server", serverDir, pgdata)
	}
	return nil
}

// typeSuffix ends a backup ID: 20261126T081700F, …D, …I.
var typeSuffix = map[string]string{TypeFull: "F", TypeDiff: "D", TypeIncr: "I"}

// parentCandidates lists, newest first, the backups a diff (fulls) or incr
// (any) may build on: same system identifier as the server, and loadable,
// with every backup of their chain, in every repository the backup goes to
// (an incremental whose parent is missing in a repository would be
// "complete" there and fail to restore). Which of them is used is settled
// once the start LSN and timeline are known (startBackup): the server's
// timeline cannot be told before pg_backup_start (pg_control_checkpoint's
// is the last checkpoint's, still the old one for a while after a
// promotion). None means a full backup, for the reason returned.
func parentCandidates(ctx context.Context, repos []repo.Repo, cluster, typ string, srv *server) ([]*Manifest, string, error) {
	if typ == TypeFull {
		return nil, "", nil
	}
	per := make([]map[string]*Manifest, len(repos))
	var newest []*Manifest
	// A backup marked as being deleted by expiry (a live run, or one
	// interrupted) would refuse the claim at the end (ClaimParent): it is
	// no parent, whatever the marker's age.
	marked := map[string]string{}
	for i, r := range repos {
		ms, err := List(ctx, r, cluster)
		if err != nil {
			return nil, "", err
		}
		if err := r.Store.List(ctx, DeletingPrefix(cluster), func(oi storage.ObjectInfo) error {
			id := strings.TrimPrefix(oi.Key, DeletingPrefix(cluster))
			if _, seen := marked[id]; !seen {
				marked[id] = fmt.Sprintf("backup %s is marked as being deleted by expiry in repository %s (%s)", id, r.Name, markerNote(oi))
			}
			return nil
		}); err != nil {
			return nil, "", fmt.Errorf("repository %s: listing expiry markers: %w", r.Name, err)
		}
		per[i] = make(map[string]*Manifest, len(ms))
		for _, m := range ms {
			per[i][m.ID] = m
		}
		if i == 0 {
			newest = ms
		}
	}
	var out []*Manifest
	var skipped []string
	for i := len(newest) - 1; i >= 0; i-- {
		m := newest[i]
		if m.SystemIdentifier != srv.sysid || (typ == TypeDiff && m.Type != TypeFull) {
			continue
		}
		if why, ok := marked[m.ID]; ok {
			skipped = append(skipped, why)
			continue
		}
		if missing := chainMissing(repos, per, m); missing != "" {
			skipped = append(skipped, missing)
			continue
		}
		out = append(out, m)
	}
	if len(out) > 0 {
		return out, "", nil
	}
	if len(skipped) > 0 {
		return nil, "no backup to build on is complete in every repository and free of expiry: " + strings.Join(firstN(skipped, 3), "; "), nil
	}
	return nil, "no backup to build on", nil
}

// chainMissing says which backup of m's chain some repository lacks (or
// cannot read), "" when every repository holds the whole chain.
func chainMissing(repos []repo.Repo, per []map[string]*Manifest, m *Manifest) string {
	for i, r := range repos {
		cur := per[i][m.ID]
		for n := 0; ; n++ {
			if cur == nil {
				return fmt.Sprintf("backup %s is missing or unreadable in repository %s", m.ID, r.Name)
			}
			if cur.Parent == "" {
				break
			}
			next := per[i][cur.Parent]
			if next == nil || n > 1000 {
				return fmt.Sprintf("backup %s depends on %s, missing or unreadable in repository %s", m.ID, cur.Parent, r.Name)
			}
			cur = next
		}
		if cur.Type != TypeFull {
			return fmt.Sprintf("the chain of backup %s in repository %s does not start with a full backup", m.ID, r.Name)
		}
	}
	return ""
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// startBackup runs pg_backup_start, naming the backup (m.ID, m.Label) after
// the reserved stamp and its type, records its start LSN and timeline
// (m.StartLSN, m.Timeline) and settles its parent: the newest candidate
// that ends at or before this backup's start LSN on this backup's history.
//
// A parent that ends later would restore silently wrong data: on a standby
// that has not replayed up to the parent's stop LSN (delayed, catching up,
// replay paused), a page the parent changed there still carries an LSN
// below the parent's start, so it is recorded unchanged and restore writes
// the parent's copy, with changes from after this backup's consistency
// point. PostgreSQL's own incremental backup refuses the same case
// ("manifest requires WAL from final timeline ... ending at ..., but this
// backup starts at ..."). The same holds across a timeline switch: a
// parent taken on the old primary after the new timeline branched off
// holds pages with transactions the failover lost, below its start LSN; a
// parent on another timeline is used only when that timeline is an
// ancestor of this backup's and the parent ends at or before the switch
// point (the history file in pg_wal). An older candidate that qualifies is
// used instead; with none, the backup is ended and started again as a
// full one (its ID and label name its type), the reason logged and
// recorded in the manifest.
func startBackup(ctx context.Context, conn *pgx.Conn, pgdata string, m *Manifest, stamp string, o Options, cands []*Manifest, log *slog.Logger) (*Manifest, error) {
	label := m.Label
	for {
		m.ID = stamp + typeSuffix[m.Type]
		if m.Label = label; m.Label == "" {
			m.Label = "pgdr " + m.ID
		}
		var startLSN string
		if err := conn.QueryRow(ctx, "SELECT pg_backup_start($1, true)::text", m.Label).Scan(&startLSN); err != nil {
			return nil, fmt.Errorf("pg_backup_start: %w", err)
		}
		lsn, err := wal.ParseLSN(startLSN)
		if err != nil {
			return nil, err
		}
		m.StartLSN = lsn
		tli, err := startTimeline(ctx, conn, lsn)
		if err != nil {
			return nil, err
		}
		m.Timeline = tli
		if m.Type == TypeFull {
			return nil, nil
		}
		var passed []string
		var hist []wal.HistoryEntry
		var histErr error
		histLoaded := false
		if tli == 0 {
			passed = append(passed, "the timeline of this backup's start is unknown (a checkpoint ran right after pg_backup_start)")
			cands = nil
		}
		for _, p := range cands {
			why := ""
			switch {
			case p.StopLSN > lsn:
				why = fmt.Sprintf("%s ends at %s", p.ID, p.StopLSN)
			case p.Timeline != tli:
				if !histLoaded {
					hist, histErr = readHistory(pgdata, tli)
					histLoaded = true
				}
				why = crossTimeline(p, tli, hist, histErr)
			}
			if why == "" {
				if len(passed) > 0 {
					log.Warn("building on an older backup: the newer ones cannot be built on (ending after this backup's start LSN or after its timeline branched off)",
						"parent", p.ID, "start_lsn", lsn, "timeline", tli, "passed_over", strings.Join(firstN(passed, 3), "; "))
				}
				m.Parent = p.ID
				return p, nil
			}
			passed = append(passed, why)
		}
		m.TypeReason = fmt.Sprintf("no backup it could build on ends before this backup's start LSN %s on its timeline %d (%s): pages it holds that this server does not have (a standby behind it, or transactions a timeline switch left behind) would be restored from it",
			lsn, tli, strings.Join(firstN(passed, 3), "; "))
		log.Warn("taking a full backup instead", "requested", o.Type, "reason", m.TypeReason)
		// End this backup; the full one starts again under its own ID.
		if _, err := conn.Exec(ctx, "SELECT pg_backup_stop(false)"); err != nil {
			return nil, fmt.Errorf("pg_backup_stop, ending the %s backup to take a full one: %w", o.Type, err)
		}
		m.Type = TypeFull
	}
}

// startTimeline returns the timeline of a backup that pg_backup_start has
// just started at start, the START TIMELINE its backup_label will have:
// pg_backup_start takes the start LSN and timeline from the checkpoint
// (primary) or restartpoint (standby) it waits for, which is the control
// file's last one while its redo LSN is start. A later checkpoint in
// between leaves the timeline unknown (0): the caller then builds on
// nothing. On a primary promoted moments ago that checkpoint is on the
// new timeline (pg_backup_start's own), while before pg_backup_start
// pg_control_checkpoint() still says the old one.
func startTimeline(ctx context.Context, conn *pgx.Conn, start wal.LSN) (uint32, error) {
	var redo string
	var tli uint32
	if err := conn.QueryRow(ctx, "SELECT redo_lsn::text, timeline_id FROM pg_control_checkpoint()").Scan(&redo, &tli); err != nil {
		return 0, fmt.Errorf("reading the checkpoint pg_backup_start used: %w", err)
	}
	r, err := wal.ParseLSN(redo)
	if err != nil {
		return 0, err
	}
	if r != start {
		return 0, nil
	}
	return tli, nil
}

// readHistory reads timeline tli's history from the server's pg_wal, where
// PostgreSQL keeps every history file it wrote or received.
func readHistory(pgdata string, tli uint32) ([]wal.HistoryEntry, error) {
	p := filepath.Join(pgdata, "pg_wal", wal.HistoryFileName(tli))
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	h, err := wal.ParseHistory(b, tli)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return h, nil
}

// crossTimeline says why p, a backup on another timeline than tli, cannot
// be built on ("" when it can): its timeline must be an ancestor of tli
// and p must end at or before the point tli's history left it.
func crossTimeline(p *Manifest, tli uint32, hist []wal.HistoryEntry, histErr error) string {
	if histErr != nil {
		return fmt.Sprintf("%s is on timeline %d, this backup on %d, whose history cannot be read: %v", p.ID, p.Timeline, tli, histErr)
	}
	for _, e := range hist {
		if e.Timeline != p.Timeline {
			continue
		}
		if p.StopLSN > e.Switch {
			return fmt.Sprintf("%s on timeline %d ends at %s, after timeline %d branched off it at %s", p.ID, p.Timeline, p.StopLSN, tli, e.Switch)
		}
		return ""
	}
	return fmt.Sprintf("%s is on timeline %d, not in the history of this backup's timeline %d", p.ID, p.Timeline, tli)
}

// awaitCheckpoint lets a standby backup start after need, the newest
// parent's stop LSN, so that it can build on it: a standby backup starts at
// the redo point of the last checkpoint the standby replayed, before the
// parent's end when the primary has not checkpointed since. It runs
// CHECKPOINT on the primary and waits, at most timeout, for the standby to
// replay it; a standby whose replay is paused is not waited for. Failures
// only warn: startBackup decides with the start LSN it gets.
func awaitCheckpoint(ctx context.Context, standby *pgx.Conn, primaryDSN string, need wal.LSN, timeout time.Duration, log *slog.Logger) {
	var redo string
	if err := standby.QueryRow(ctx, "SELECT redo_lsn::text FROM pg_control_checkpoint()").Scan(&redo); err != nil {
		log.Warn("reading the standby's last restartpoint", "err", err)
		return
	}
	if r, err := wal.ParseLSN(redo); err != nil || r >= need {
		return
	}
	pc, err := pgx.Connect(ctx, primaryDSN)
	if err != nil {
		log.Warn("connecting to the primary for a checkpoint", "err", err)
		return
	}
	defer pc.Close(context.WithoutCancel(ctx))
	var ckpt string
	if _, err := pc.Exec(ctx, "CHECKPOINT"); err != nil {
		log.Warn("CHECKPOINT on the primary, so that this backup starts after its parent's end", "err", err)
		return
	}
	if err := pc.QueryRow(ctx, "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()").Scan(&ckpt); err != nil {
		log.Warn("reading the primary's checkpoint", "err", err)
		return
	}
	target, err := wal.ParseLSN(ckpt)
	if err != nil {
		return
	}
	log.Info("waiting for the standby to replay a checkpoint of the primary, so that this backup starts after its parent's end",
		"checkpoint", target, "parent_stop_lsn", need)
	deadline := time.Now().Add(timeout)
	for {
		var replay, pause string
		if err := standby.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '0/0'), pg_get_wal_replay_pause_state()").Scan(&replay, &pause); err != nil {
			log.Warn("reading the standby's replay position", "err", err)
			return
		}
		if r, err := wal.ParseLSN(replay); err == nil && r > target {
			return
		}
		if pause != "not paused" {
			log.Warn("replay is paused on this standby: not waiting for it", "replay_lsn", replay, "checkpoint", target)
			return
		}
		if time.Now().After(deadline) {
			log.Warn("the standby has not replayed the primary's checkpoint in time", "replay_lsn", replay, "checkpoint", target, "waited", timeout)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reservation holds a backup ID's stamp (the UTC second, without the type
// letter) in every repository while the backup runs.
type reservation struct {
	stamp string
	key   string
	body  string
	repos []repo.Repo
}

// reservePrefix is where reservations of stamp live: next to the backups
// (so one listing of backup/<stamp> finds both) but never taken for one
// (backup IDs end with F, D or I).
func reservePrefix(cluster, stamp string) string {
	return backupPrefix(cluster) + stamp + ReservedSuffix + "/"
}

// ReservePrefix is where the reservations of stamp live (see reserveID);
// expiry (agent/expire) and the copier into async repositories
// (agent/repocopy) read and write them too.
func ReservePrefix(cluster, stamp string) string { return reservePrefix(cluster, stamp) }

// reserveID reserves a backup ID stamp in every repository: the current
// second, or the first later one no backup and no other reservation uses.
// The object stores have no put-if-absent, so each process puts a
// reservation of its own (a unique key) and then lists the stamp: it holds
// the stamp only if nothing else is there, in every repository. Of two
// racing processes at least one sees the other (the later put precedes
// the later listing), so they never both win; when both lose they retry
// on the next second after a random pause.
func reserveID(ctx context.Context, repos []repo.Repo, cluster, node string, now func() time.Time, log *slog.Logger) (*reservation, error) {
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	body := fmt.Sprintf(`{"node":%q,"pid":%d,"time":%q}`, node, os.Getpid(), now().UTC().Format(time.RFC3339Nano))
	t := now().UTC()
	for range 30 {
		stamp := t.Format("20060102T150405")
		r := &reservation{stamp: stamp, key: reservePrefix(cluster, stamp) + hex.EncodeToString(nonce[:]), body: body, repos: repos}
		used, err := r.othersUse(ctx, cluster)
		if err != nil {
			return nil, err
		}
		if !used {
			for _, rp := range repos {
				if err := rp.Store.Put(ctx, r.key, strings.NewReader(body), int64(len(body))); err != nil {
					r.release(context.WithoutCancel(ctx))
					return nil, fmt.Errorf("repository %s: reserving backup ID %s: %w", rp.Name, stamp, err)
				}
			}
			used, err = r.othersUse(ctx, cluster)
			if err != nil {
				r.release(context.WithoutCancel(ctx))
				return nil, err
			}
			if !used {
				return r, nil
			}
			r.release(context.WithoutCancel(ctx))
			log.Debug("another backup reserved the same ID; trying the next second", "stamp", stamp)
			var j [1]byte
			_, _ = rand.Read(j[:])
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(10+int(j[0])) * time.Millisecond):
			}
		}
		t = t.Add(time.Second)
		if n := now().UTC(); n.After(t) {
			t = n
		}
	}
	return nil, errors.New("could not reserve a backup ID: every second tried is taken by another backup (are many backups of this cluster running?)")
}

// othersUse reports whether any repository holds, under r's stamp, an
// object other than r's own reservation: a backup or another reservation.
func (r *reservation) othersUse(ctx context.Context, cluster string) (bool, error) {
	for _, rp := range r.repos {
		used := false
		err := rp.Store.List(ctx, backupPrefix(cluster)+r.stamp, func(oi storage.ObjectInfo) error {
			if oi.Key != r.key {
				used = true
				return io.EOF
			}
			return nil
		})
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("repository %s: listing backups at %s: %w", rp.Name, r.stamp, err)
		}
		if used {
			return true, nil
		}
	}
	return false, nil
}

// release deletes the reservation, best effort: once the manifest exists
// the backup itself keeps the stamp taken, and a stale reservation only
// makes the next backup use the following second.
func (r *reservation) release(ctx context.Context) {
	for _, rp := range r.repos {
		_ = rp.Store.Delete(ctx, r.key)
	}
}

var tliRE = regexp.MustCompile(`(?m)^START TIMELINE: (\d+)$`)

func labelTimeline(label []byte) (uint32, error) {
	mm := tliRE.FindSubmatch(label)
	if mm == nil {
		return 0, fmt.Errorf("backup_label has no START TIMELINE:\n%s", label)
	}
	v, err := strconv.ParseUint(string(mm[1]), 10, 32)
	return uint32(v), err
}

func switchWAL(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT pg_switch_wal()")
	return err
}

// DefaultWALTimeout is how long a backup waits, after pg_backup_stop, for
// the WAL it needs to be in every repository (pgBackRest's archive-timeout
// default is also 60 s): archiving that has not caught up by then is
// failing, and waiting longer only hides it.
const DefaultWALTimeout = 60 * time.Second

// waitWAL waits until every segment the backup needs is in every
// repository, at most timeout; archiver describes the archiver's state
// (pg_stat_archiver) for the messages.
func waitWAL(ctx context.Context, d Deps, segs []string, timeout time.Duration, archiver func(context.Context) string, log *slog.Logger) error {
	deadline := time.Now().Add(timeout)
	var lastLog time.Time
	for {
		missing := ""
		for _, r := range d.Repos {
			for _, s := range segs {
				if _, err := r.Store.Stat(ctx, repo.WALKey(d.Cfg.Cluster, s)); err != nil {
					if !errors.Is(err, storage.ErrNotFound) {
						return fmt.Errorf("checking the archive in repository %s: %w", r.Name, err)
					}
					missing = "segment " + s + " in repository " + r.Name
					break
				}
			}
			if missing != "" {
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the WAL this backup needs is not archived after %s (--wal-timeout): %s is missing; %s; the backup was not recorded — check archive_command and the server log",
				timeout, missing, archiver(ctx))
		}
		if time.Since(lastLog) >= 15*time.Second {
			log.Info("waiting for the WAL the backup needs to be archived", "missing", missing, "archiver", archiver(ctx), "deadline", deadline.Format(time.RFC3339))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// archiverState describes pg_stat_archiver on the server that archives
// the backup's WAL: the primary (its DSN given) for a standby backup,
// else the server backed up.
func archiverState(ctx context.Context, conn *pgx.Conn, standby bool, primaryDSN string) string {
	where := "the server"
	if standby && primaryDSN != "" {
		pc, err := pgx.Connect(ctx, primaryDSN)
		if err != nil {
			return "pg_stat_archiver of the primary: not read: " + err.Error()
		}
		defer pc.Close(context.WithoutCancel(ctx))
		conn, where = pc, "the primary"
	}
	var archived, failed int64
	var lastArchived, archivedAt, lastFailed, failedAt string
	err := conn.QueryRow(ctx, `SELECT archived_count, coalesce(last_archived_wal, ''), coalesce(last_archived_time::text, ''),
		failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver`).
		Scan(&archived, &lastArchived, &archivedAt, &failed, &lastFailed, &failedAt)
	if err != nil {
		return "pg_stat_archiver of " + where + ": not read: " + err.Error()
	}
	s := fmt.Sprintf("pg_stat_archiver of %s: last_archived_wal %s at %s (%d archived)", where, dashIfEmpty(lastArchived), dashIfEmpty(archivedAt), archived)
	if failed > 0 {
		s += fmt.Sprintf(", last_failed_wal %s at %s (%d failures)", lastFailed, failedAt, failed)
	} else {
		s += ", no failure"
	}
	if standby && primaryDSN == "" {
		s += " (a standby's WAL is archived by the primary: --primary-dsn reports its archiver and closes the last segment)"
	}
	return s
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// copier reads files and stores them.
type copier struct {
	d           Deps
	m           *Manifest
	srv         *server
	threshold   wal.LSN
	parentFiles map[string]File
	pool        *objstream.Pool

	total, done atomic.Int64
	partSize    int64 // files larger than this are stored in parts
	checksum    objstream.Checksum
	maxRate     int64     // bytes per second read from the data directory, 0 = unlimited
	start       time.Time // when copying began (for maxRate)
	mu          sync.Mutex
	corrupt     []CorruptPage

	control pgcontrol.Reader // reads global/pg_control (control.go)
}

// abandon deletes, best effort, what a failed backup uploaded: without a
// manifest it is not a backup, only wasted space.
func (c *copier) abandon(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	prefix := backupPrefix(c.m.Cluster) + c.m.ID + "/"
	for _, r := range c.d.Repos {
		var keys []string
		_ = r.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			keys = append(keys, oi.Key)
			return nil
		})
		for _, k := range keys {
			_ = r.Store.Delete(ctx, k)
		}
	}
	c.d.Log.Info("removed the objects of the failed backup", "backup", c.m.ID)
}

func (c *copier) copyAll(ctx context.Context, files []walkFile, parallel int) ([]File, error) {
	tasks := interleave(splitTasks(files, c.partSize))
	out := make([]partResult, len(tasks))
	// Not errgroup.WithContext: its context ends when Wait returns, and
	// the uploads still finishing then must keep theirs.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up := &uploads{sem: make(chan struct{}, maxPendingUploads), cancel: cancel}
	var g errgroup.Group
	g.SetLimit(parallel)
	for i, t := range tasks {
		g.Go(func() error {
			r, err := c.copyTask(ctx, t, up)
			out[i] = r
			if err != nil {
				up.fail(err)
			}
			return nil
		})
	}
	_ = g.Wait() // errors go to up.fail
	if err := up.wait(); err != nil {
		return nil, err
	}
	return c.mergeParts(out), nil
}

// Objects stored in at most asyncStored bytes are finished in the
// background: once the worker has written the last byte, the rest of the
// upload (a file repository's fsync, rename and directory fsync; an S3
// request) waits in uploads, at most maxPendingUploads at a time, while the
// worker goes on to the next file. A backup is mostly a thousand small
// files after the few large ones, and two workers waiting on an fsync each
// left the CPUs idle; waiting together, the fsyncs also share the
// file system's journal commits. Memory stays bounded: a pending upload
// holds at most asyncStored bytes (an S3 body), a file repository's none.
const (
	asyncStored       = 1 << 20
	maxPendingUploads = 32
)

// uploads tracks the uploads finishing in the background and the first
// error of a copyAll.
type uploads struct {
	sem    chan struct{}
	wg     sync.WaitGroup
	cancel context.CancelFunc
	mu     sync.Mutex
	err    error
}

// fail records the first error and cancels the other workers and uploads.
func (u *uploads) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
	u.cancel()
}

// finish runs wait (the end of an upload) in the background once a slot
// is free; its error fails the backup.
func (u *uploads) finish(wait func() error) {
	u.sem <- struct{}{}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() { <-u.sem }()
		if err := wait(); err != nil {
			u.fail(err)
		}
	}()
}

// wait waits for every upload handed to finish and returns the first
// error of the copyAll.
func (u *uploads) wait() error {
	u.wg.Wait()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// task is one unit of parallel work: a whole file, or one part of a file
// larger than PartSize.
type task struct {
	wf       walkFile
	part     int // 0-based
	nparts   int // 1 for a whole file
	partSize int64
}

func splitTasks(files []walkFile, partSize int64) []task {
	var out []task
	for _, f := range files {
		n := int((f.info.Size() + partSize - 1) / partSize)
		if n < 2 {
			out = append(out, task{wf: f, nparts: 1})
			continue
		}
		// n parts of the same size in whole pages (never more than
		// partSize, a multiple of the page): 214 MiB are two parts of
		// 107 MiB, not 128 and 86 MiB, so that the workers' last large
		// tasks end close together.
		ps := (f.info.Size() + int64(n) - 1) / int64(n)
		ps = (ps + pgpage.BlockSize - 1) / pgpage.BlockSize * pgpage.BlockSize
		for i := range n {
			out = append(out, task{wf: f, part: i, nparts: n, partSize: ps})
		}
	}
	// Largest first, whatever file they are parts of.
	sort.SliceStable(out, func(i, j int) bool { return out[i].size() > out[j].size() })
	return out
}

// smallTask is the size under which a task is mostly waiting for the
// repository (an object created, written and fsynced) rather than
// compressing.
const smallTask = 1 << 20

// interleave spreads the small tasks evenly between the large ones (both
// kept largest first), so that the small files' uploads wait for the disk
// while the other workers compress, instead of all at the end with the
// CPUs idle.
func interleave(tasks []task) []task {
	var large, small []task
	for _, t := range tasks {
		if t.size() >= smallTask {
			large = append(large, t)
		} else {
			small = append(small, t)
		}
	}
	if len(large) == 0 || len(small) == 0 {
		return tasks
	}
	out := make([]task, 0, len(tasks))
	for i, t := range large {
		out = append(out, t)
		out = append(out, small[i*len(small)/len(large):(i+1)*len(small)/len(large)]...)
	}
	return out
}

// size is how many bytes t reads (as the file was listed).
func (t task) size() int64 {
	if t.nparts <= 1 {
		return t.wf.info.Size()
	}
	start := int64(t.part) * t.partSize
	if t.part < t.nparts-1 {
		return t.partSize
	}
	return t.wf.info.Size() - start
}

// partResult is what copying one task produced.
type partResult struct {
	path  string
	entry File // the file's entry, without Size, Pages, objects
	part  Part // Object empty when nothing was stored
	pages int
}

// copyTask stores one file, or one part of one, whole or (for a main-fork
// relation file that the parent chain holds) as its changed pages.
func (c *copier) copyTask(ctx context.Context, t task, up *uploads) (partResult, error) {
	if err := ctx.Err(); err != nil {
		return partResult{}, err
	}
	wf := t.wf
	fh, err := os.Open(wf.abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return partResult{}, nil
		}
		return partResult{}, fmt.Errorf("reading %s: %w", wf.rel, err)
	}
	defer fh.Close()
	res := partResult{path: wf.rel, entry: File{Path: wf.rel, Mode: uint32(wf.info.Mode().Perm()), MTime: wf.info.ModTime().UTC(), Kind: KindFull}}
	rf, isRel := pgpage.ParseRelPath(wf.rel)
	pf, inParent := c.parentFiles[wf.rel]
	delta := isRel && rf.Fork == "main" && inParent
	if delta {
		res.entry.Kind = KindDelta
		res.entry.Refs = slices.Clone(pf.Refs)
	}
	if wf.info.Size() == 0 {
		return res, nil
	}
	start := int64(t.part) * t.partSize
	limit := int64(1 << 62) // the last part reads whatever the file has grown to
	key := objectKey(c.m.Cluster, c.m.ID, wf.rel)
	if t.nparts > 1 {
		key += fmt.Sprintf(".pgdr-part-%d", t.part)
		if t.part < t.nparts-1 {
			limit = t.partSize
		}
	}
	src := io.NewSectionReader(fh, start, limit)
	if wf.rel == controlFile {
		if src, err = c.readControl(ctx, wf); err != nil {
			return partResult{}, err
		}
	}
	res.part.Offset = start
	produce := func(w io.Writer) error {
		var err error
		if isRel {
			res.part.Size, res.pages, err = c.copyRelation(src, fh, start, wf.rel, rf, delta, w, min(wf.info.Size()-start, limit))
		} else {
			res.part.Size, err = io.Copy(w, &countingReader{r: src, c: c})
		}
		return err
	}
	stored, sum, ok, err := c.putAll(ctx, key, min(wf.info.Size()-start, limit), produce, up)
	if err != nil {
		return partResult{}, err
	}
	if ok {
		res.part.Object = key[len(c.m.Cluster)+1:]
		res.part.setSum(sum)
		res.part.Stored = stored
	}
	return res, nil
}

// mergeParts turns task results into one entry per file, in path order.
func (c *copier) mergeParts(results []partResult) []File {
	var out []File
	byPath := map[string]int{}
	for _, r := range results {
		if r.path == "" {
			continue // vanished during the backup (a dropped relation)
		}
		i, seen := byPath[r.path]
		if !seen {
			byPath[r.path] = len(out)
			out = append(out, r.entry)
			i = len(out) - 1
		}
		f := &out[i]
		f.Pages += r.pages
		if r.part.Size > 0 {
			f.Size = max(f.Size, r.part.Offset+r.part.Size)
		}
		if r.part.Object != "" {
			f.Parts = append(f.Parts, r.part)
			f.Stored += r.part.Stored
		}
	}
	for i := range out {
		f := &out[i]
		sort.Slice(f.Parts, func(a, b int) bool { return f.Parts[a].Offset < f.Parts[b].Offset })
		if len(f.Parts) > 0 {
			f.Refs = append(f.Refs, c.m.ID)
		}
		// A file stored as one object keeps the compact form.
		if len(f.Parts) == 1 && f.Parts[0].Offset == 0 && !strings.Contains(f.Parts[0].Object, ".pgdr-part-") {
			f.Object, f.SHA256, f.BLAKE3 = f.Parts[0].Object, f.Parts[0].SHA256, f.Parts[0].BLAKE3
			f.Parts = nil
		}
	}
	sortFiles(out)
	return out
}

// copyRelation reads a relation file page by page: verifies checksums
// (re-reading a failed page once; a page changed since the backup started
// is left to WAL replay) and writes either every page or, for a delta,
// (block, page) records of the pages changed since the threshold.
//
// size is the expected size (the file may have grown or shrunk since it was
// listed): a small file gets a buffer of its size and a page, read at once,
// not a whole chunk (a backup reads a thousand small files, and zeroing
// 1 MiB for each showed in its profile).
func (c *copier) copyRelation(src io.Reader, fh *os.File, start int64, rel string, rf pgpage.RelFile, delta bool, w io.Writer, size int64) (int64, int, error) {
	const chunkPages = 128
	bufPages := min(chunkPages, size/pgpage.BlockSize+1)
	buf := make([]byte, bufPages*pgpage.BlockSize)
	var hdr [4]byte
	off := start
	pages := 0
	for {
		n, err := io.ReadFull(src, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return 0, 0, fmt.Errorf("reading %s: %w", rel, err)
		}
		n -= n % pgpage.BlockSize // a page being extended right now is left to WAL replay
		for p := 0; p < n; p += pgpage.BlockSize {
			page := buf[p : p+pgpage.BlockSize]
			blockInFile := uint32((off + int64(p)) / pgpage.BlockSize)
			if c.srv.checksums {
				c.checkPage(fh, rel, rf, page, blockInFile, off+int64(p))
			}
			if !delta {
				continue
			}
			if pgpage.IsNew(page) || wal.LSN(pgpage.ParseHeader(page).LSN) >= c.threshold {
				binary.BigEndian.PutUint32(hdr[:], blockInFile)
				if _, err := w.Write(hdr[:]); err != nil {
					return 0, 0, err
				}
				if _, err := w.Write(page); err != nil {
					return 0, 0, err
				}
				pages++
			}
		}
		if !delta && n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return 0, 0, err
			}
		}
		off += int64(n)
		c.read(int64(n))
		if n < len(buf) {
			return off - start, pages, nil
		}
	}
}

func (c *copier) checkPage(fh *os.File, rel string, rf pgpage.RelFile, page []byte, blockInFile uint32, at int64) {
	blkno := rf.BlockNumber(blockInFile)
	if pgpage.Verify(page, blkno) == nil {
		return
	}
	if wal.LSN(pgpage.ParseHeader(page).LSN) >= c.m.StartLSN {
		return // written during the backup: WAL replay rewrites it
	}
	again := make([]byte, pgpage.BlockSize)
	if _, err := fh.ReadAt(again, at); err == nil {
		err := pgpage.Verify(again, blkno)
		if err == nil || wal.LSN(pgpage.ParseHeader(again).LSN) >= c.m.StartLSN {
			copy(page, again)
			return
		}
		c.mu.Lock()
		c.corrupt = append(c.corrupt, CorruptPage{Path: rel, Block: blockInFile, Error: err.Error()})
		c.mu.Unlock()
	}
}

// putAll streams what produce writes, compressed and encrypted, to key in
// every repository at once, and returns the bytes stored in one. The
// uploads start with the first byte produced: when produce writes nothing
// (a delta with no changed page) no object is created and ok is false.
// PartSize is the size of the parts a larger file is stored in, each its
// own object read, compressed and restored in parallel, so that one 1 GiB
// relation segment does not leave the other cores idle.
const PartSize = 128 << 20

func (c *copier) putAll(ctx context.Context, key string, size int64, produce func(io.Writer) error, up *uploads) (stored int64, sum objstream.Sum, ok bool, err error) {
	repos := c.d.Repos
	pws := make([]*io.PipeWriter, len(repos))
	errs := make([]error, len(repos))
	var wg sync.WaitGroup
	counter := &countingWriter{}
	var enc objstream.Writer
	lazy := &lazyWriter{start: func() (io.Writer, error) {
		ws := make([]io.Writer, len(repos))
		for i, r := range repos {
			pr, pw := io.Pipe()
			pws[i], ws[i] = pw, pw
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = r.Store.Put(ctx, key, pr, -1)
				pr.CloseWithError(errors.Join(errs[i], errors.New("upload ended")))
			}()
		}
		counter.w = io.MultiWriter(ws...)
		// One encoder goroutine per object (concurrency 1): the workers
		// already keep the CPUs busy, and zstd's asynchronous block
		// encoding cost about 15% more CPU for the same output.
		opts := keys.StreamOptions(c.d.Cfg, c.d.Recipients)
		opts.Checksum = c.checksum
		var err error
		enc, err = c.pool.NewWriter(counter, opts)
		return enc, err
	}}
	err = produce(lazy)
	if lazy.w == nil && lazy.err == nil {
		return 0, objstream.Sum{}, false, err
	}
	if err == nil {
		err = lazy.err
	}
	if enc != nil {
		if cerr := enc.Close(); err == nil {
			err = cerr
		}
	}
	for _, pw := range pws {
		if err != nil {
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
	}
	// Every byte has gone through the pipes; what is left is each
	// repository finishing its object.
	finish := func() error {
		wg.Wait()
		for i, e := range errs {
			if e != nil {
				return fmt.Errorf("repository %s: storing %s: %w", repos[i].Name, key, e)
			}
		}
		return nil
	}
	if err != nil {
		wg.Wait()
		return 0, objstream.Sum{}, false, fmt.Errorf("storing %s: %w", key, err)
	}
	if counter.n <= asyncStored {
		up.finish(finish)
	} else if err := finish(); err != nil {
		return 0, objstream.Sum{}, false, err
	}
	return counter.n, enc.Sum(), true, nil
}

// lazyWriter calls start on the first Write and writes through what it returns.
type lazyWriter struct {
	start func() (io.Writer, error)
	w     io.Writer
	err   error
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if l.w == nil && l.err == nil {
		l.w, l.err = l.start()
	}
	if l.err != nil {
		return 0, l.err
	}
	return l.w.Write(p)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// countingReader counts what a whole-file copy reads, and throttles it.
type countingReader struct {
	r io.Reader
	c *copier
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.c.read(int64(n))
	return n, err
}

// read records n bytes read from the data directory and, with a rate
// limit, sleeps until the backup is back under it (all workers share it).
func (c *copier) read(n int64) {
	done := c.done.Add(n)
	if c.maxRate <= 0 {
		return
	}
	ahead := time.Duration(float64(done)/float64(c.maxRate)*float64(time.Second)) - time.Since(c.start)
	if ahead > 0 {
		time.Sleep(ahead)
	}
}

func repoNames(rs []repo.Repo) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
