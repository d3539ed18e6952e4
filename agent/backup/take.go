package backup

import (
	"context"
	"encoding/binary"
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

	"github.com/pgdr/pgdr/pkg/config"
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
	WALTimeout   time.Duration // how long to wait for the WAL the backup needs (default 10 min)
	Progress     io.Writer     // progress lines, nil for none
	MaxRate      int64         // bytes per second read from the data directory (0 = unlimited), to spare the server's I/O
	PartSize     int64         // files larger than this are stored as parts read in parallel (default PartSize)
	// Checksum is the hash of every object's plaintext, in its trailer
	// and in the manifest: objstream.ChecksumBLAKE3 or
	// objstream.ChecksumSHA256 (a FIPS-approved hash; also what pgdr
	// wrote before BLAKE3, and all it can restore). Empty means
	// DefaultChecksum().
	Checksum objstream.Checksum
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
	timeline      uint32
	dataDirectory string
}

func inspect(ctx context.Context, conn *pgx.Conn) (*server, error) {
	s := &server{conn: conn}
	var checksums, segSize, sysid string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, pg_is_in_recovery(),
		current_setting('data_checksums'), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
		(SELECT system_identifier::text FROM pg_control_system()), current_setting('data_directory'),
		(SELECT timeline_id FROM pg_control_checkpoint())`).
		Scan(&s.version, &s.inRecovery, &checksums, &segSize, &sysid, &s.dataDirectory, &s.timeline)
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
	if o.Type != TypeFull && o.Type != TypeDiff && o.Type != TypeIncr {
		return nil, fmt.Errorf("unknown backup type %q (full, diff or incr)", o.Type)
	}
	if o.Parallel <= 0 {
		o.Parallel = runtime.NumCPU()
	}
	if o.WALTimeout <= 0 {
		o.WALTimeout = 10 * time.Minute
	}
	if o.PartSize <= 0 {
		o.PartSize = PartSize
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
		return nil, fmt.Errorf("connecting to %s: %w", d.Cfg.Postgres.DSN, err)
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

	main := d.Repos[0]
	parent, err := pickParent(ctx, main, d.Cfg.Cluster, o.Type, srv, log)
	if err != nil {
		return nil, err
	}
	typ := o.Type
	if parent == nil {
		typ = TypeFull
	}
	id, err := newID(ctx, main, d.Cfg.Cluster, typ)
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		Format: ManifestFormat, ID: id, Type: typ, Label: o.Label, Cluster: d.Cfg.Cluster, Node: d.Cfg.Node.Name,
		SystemIdentifier: srv.sysid, PGVersion: srv.version, FromStandby: srv.inRecovery,
		DataChecksums: srv.checksums, SegmentSize: srv.segSize, StartTime: time.Now().UTC(),
	}
	if parent != nil {
		m.Parent = parent.ID
	}
	if m.Label == "" {
		m.Label = "pgdr " + id
	}
	log = log.With("backup", id, "type", typ)

	var startLSN string
	if err := conn.QueryRow(ctx, "SELECT pg_backup_start($1, true)::text", m.Label).Scan(&startLSN); err != nil {
		return nil, fmt.Errorf("pg_backup_start: %w", err)
	}
	if m.StartLSN, err = wal.ParseLSN(startLSN); err != nil {
		return nil, err
	}
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
	if m.Timeline, err = labelTimeline(label); err != nil {
		return nil, err
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
	if err := waitWAL(ctx, d, segs, o.WALTimeout, log); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		m.DatabaseBytes += f.Size
		m.StoredBytes += f.Stored
	}
	m.DurationSeconds = time.Since(m.StartTime).Seconds()
	for i, r := range d.Repos {
		if err := saveManifest(ctx, r, m); err != nil {
			// A manifest already written elsewhere would make the backup
			// exist in some repositories only: take it back.
			for _, done := range d.Repos[:i] {
				_ = done.Store.Delete(context.WithoutCancel(ctx), manifestKey(m.Cluster, m.ID))
			}
			return nil, err
		}
	}
	complete = true
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

// pickParent finds the backup a diff (last full) or incr (last backup)
// builds on; nil means the backup must be full.
func pickParent(ctx context.Context, r repo.Repo, cluster, typ string, srv *server, log *slog.Logger) (*Manifest, error) {
	if typ == TypeFull {
		return nil, nil
	}
	ms, err := List(ctx, r, cluster)
	if err != nil {
		return nil, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if m.SystemIdentifier != srv.sysid {
			continue
		}
		if typ == TypeDiff && m.Type != TypeFull {
			continue
		}
		if m.Timeline != srv.timeline {
			log.Warn("the last backup is on another timeline; taking a full backup", "parent_candidate", m.ID, "its_timeline", m.Timeline, "timeline", srv.timeline)
			return nil, nil
		}
		return m, nil
	}
	log.Warn("no backup to build on; taking a full backup", "requested", typ)
	return nil, nil
}

func newID(ctx context.Context, r repo.Repo, cluster, typ string) (string, error) {
	suffix := map[string]string{TypeFull: "F", TypeDiff: "D", TypeIncr: "I"}[typ]
	now := time.Now().UTC()
	for i := 0; i < 5; i++ {
		id := now.Add(time.Duration(i)*time.Second).Format("20060102T150405") + suffix
		taken := false
		err := r.Store.List(ctx, backupPrefix(cluster)+id[:15], func(storage.ObjectInfo) error {
			taken = true
			return io.EOF
		})
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		if !taken {
			return id, nil
		}
	}
	return "", errors.New("could not find a free backup ID")
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

// waitWAL waits until every segment the backup needs is in every repository.
func waitWAL(ctx context.Context, d Deps, segs []string, timeout time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(timeout)
	logged := false
	for {
		missing := ""
		for _, r := range d.Repos {
			for _, s := range segs {
				if _, err := r.Store.Stat(ctx, repo.WALKey(d.Cfg.Cluster, s)); err != nil {
					if !errors.Is(err, storage.ErrNotFound) {
						return fmt.Errorf("checking the archive in repository %s: %w", r.Name, err)
					}
					missing = r.Name + ": " + s
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
			return fmt.Errorf("the WAL this backup needs is not archived after %s (missing %s); the backup was not recorded — check archive_command", timeout, missing)
		}
		if !logged {
			log.Info("waiting for the WAL the backup needs to be archived", "missing", missing)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
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
