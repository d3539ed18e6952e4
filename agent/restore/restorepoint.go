package restore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// This file finds the restore point of a --target-name restore in the
// archived WAL, so that the backup can be chosen and an impossible target
// refused before anything is written.
//
// PostgreSQL replays from a backup's start LSN (its checkpoint's redo
// point) and stops after the first XLOG_RESTORE_POINT record whose name
// is the target's; it fails if that is before the backup is consistent
// (its stop LSN). Replay follows the history of the timeline the restore
// chose (timeline.go), reading each segment from the newest timeline of
// that history that had begun by then.

// RestorePoint is the named restore point a restore recovers to, as found
// in the archive.
type RestorePoint struct {
	Name string `json:"name"`
	// LSN is where its record begins; EndLSN where it ends, where recovery
	// stops (the LSN pg_create_restore_point returned).
	LSN      wal.LSN   `json:"lsn"`
	EndLSN   wal.LSN   `json:"end_lsn"`
	Time     time.Time `json:"time"`
	Timeline uint32    `json:"timeline"`
}

// maxRestorePointName is the longest recovery_target_name PostgreSQL
// accepts (MAXFNAMELEN - 1 bytes).
const maxRestorePointName = 63

// pickByName returns the newest backup of ms (one repository's backups)
// from which recovery to the restore point name ends consistently, and the
// restore point.
func pickByName(ctx context.Context, d Deps, ms []*backup.Manifest, name, timeline string) (*backup.Manifest, *RestorePoint, error) {
	return findRestorePoint(ctx, d, ms, name, timeline, false)
}

// checkName checks, for a name target, that recovery from m reaches the
// restore point consistently, and returns it; for other targets it does
// nothing.
func checkName(ctx context.Context, d Deps, m *backup.Manifest, t Target, timeline string) (*RestorePoint, error) {
	if t.Name == "" {
		return nil, nil
	}
	_, rp, err := findRestorePoint(ctx, d, []*backup.Manifest{m}, t.Name, timeline, true)
	return rp, err
}

// findRestorePoint reads the archived WAL from the start of the oldest
// backup of ms forward, and returns the first restore point called name
// that one of the backups reaches consistently (recovery from a backup
// stops at the first restore point of that name after the backup's start,
// which must be at or after its stop LSN), with the newest such backup.
// With explicit, ms is the one backup the user chose, and the error says
// why it cannot be used. The WAL is read along the timeline recovery from
// the oldest backup follows (timeline is --target-timeline, see
// chooseTimeline).
func findRestorePoint(ctx context.Context, d Deps, ms []*backup.Manifest, name, timeline string, explicit bool) (*backup.Manifest, *RestorePoint, error) {
	if len(name) > maxRestorePointName {
		return nil, nil, fmt.Errorf("--target-name %q: restore point names are at most %d bytes", name, maxRestorePointName)
	}
	if len(ms) == 0 {
		return nil, nil, errors.New("no backup to recover from")
	}
	began := time.Now()
	a := &walArchive{cluster: d.Cfg.Cluster, repos: d.Repos, ids: d.Identities, log: d.Log}
	cands := slices.Clone(ms)
	slices.SortStableFunc(cands, func(x, y *backup.Manifest) int { return cmp.Compare(x.StartLSN, y.StartLSN) })
	segSize := cands[0].SegmentSize
	if segSize == 0 {
		segSize = wal.DefaultSegmentSize
	}
	g, err := loadTimelines(ctx, a, segSize)
	if err != nil {
		return nil, nil, err
	}
	tli, err := chooseTimeline(ctx, g, a, cands[0], timeline, 0)
	if err != nil {
		return nil, nil, err
	}
	hist := g.history(tli)
	// Only backups on that history can recover along it.
	var off []string
	cands = slices.DeleteFunc(cands, func(m *backup.Manifest) bool {
		if why := hist.excludes(m); why != "" {
			off = append(off, fmt.Sprintf("backup %s: %s", m.ID, why))
			return true
		}
		return false
	})
	if len(cands) == 0 {
		return nil, nil, fmt.Errorf("cannot look for restore point %q: %s", name, strings.Join(off, "; "))
	}
	for _, o := range off {
		d.Log.Warn("backup not considered for the restore point", "reason", o)
	}
	start := cands[0].StartLSN
	d.Log.Info("looking for the restore point in the archived WAL", "name", name, "from", start, "backup", cands[0].ID, "timelines", hist.String())

	segments := 0
	pf := newPrefetcher(ctx, a, segSize, func(segNo uint64) string {
		return wal.SegmentName(hist.timelineOf(segNo, segSize), segNo, segSize)
	})
	defer pf.close()
	src := func(ctx context.Context, segNo uint64) (io.ReadCloser, error) {
		rc, err := pf.get(ctx, segNo)
		if err == nil {
			segments++
		}
		return rc, err
	}
	rr, err := wal.NewRecordReader(src, segSize, start)
	if err != nil {
		return nil, nil, err
	}
	defer rr.Close()

	var prev *RestorePoint // the previous occurrence of the name
	var stuck *stuckAt     // the last occurrence a backup stops at too early
	for {
		rec, err := rr.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the archived WAL for restore point %q: %w", name, err)
		}
		if !rec.IsRestorePoint() {
			continue
		}
		p, err := rec.RestorePoint()
		if err != nil || p.Name != name {
			continue
		}
		rp := &RestorePoint{Name: p.Name, LSN: p.LSN, EndLSN: p.End, Time: p.Time, Timeline: p.Timeline}
		// The backups whose recovery stops here: those starting after the
		// previous occurrence and at or before this one. Those among them
		// that are consistent by then can be used; the newest wins.
		var pick, early *backup.Manifest
		for _, m := range cands {
			if m.StartLSN > rp.LSN || prev != nil && m.StartLSN <= prev.LSN {
				continue
			}
			if m.StopLSN <= rp.EndLSN {
				pick = m
			} else {
				early = m
			}
		}
		if pick != nil {
			d.Log.Info("restore point found", "name", name, "lsn", rp.LSN, "end_lsn", rp.EndLSN, "time", rp.Time.Format(time.RFC3339Nano),
				"timeline", rp.Timeline, "backup", pick.ID, "segments_read", segments, "seconds", fmt.Sprintf("%.1f", time.Since(began).Seconds()))
			return pick, rp, nil
		}
		if early != nil {
			stuck = &stuckAt{rp: rp, m: early}
		}
		prev = rp
		if cands[len(cands)-1].StartLSN <= rp.LSN {
			// Every backup stops at or before this occurrence: none can
			// reach a later one.
			break
		}
	}
	return nil, nil, notReached(name, cands, stuck, rr, explicit)
}

// stuckAt is an occurrence of the restore point that recovery from a
// backup stops at before the backup is consistent.
type stuckAt struct {
	rp *RestorePoint
	m  *backup.Manifest
}

// notReached explains why no backup of cands recovers to the restore
// point name: not in the archive after them, or only before their ends.
func notReached(name string, cands []*backup.Manifest, stuck *stuckAt, rr *wal.RecordReader, explicit bool) error {
	if stuck != nil {
		rp, m := stuck.rp, stuck.m
		if explicit {
			return fmt.Errorf("restore point %q (at %s, created %s) is before the end of backup %s (%s): recovery from that backup would stop there before it is consistent; choose an earlier backup (or omit --backup)",
				name, rp.LSN, rp.Time.Format(time.RFC3339Nano), m.ID, m.StopLSN)
		}
		return fmt.Errorf("no backup can recover to restore point %q: the one at %s (created %s) is before the end of backup %s (%s), so recovery from that backup would stop there before it is consistent, and no later backup is followed by one",
			name, rp.LSN, rp.Time.Format(time.RFC3339Nano), m.ID, m.StopLSN)
	}
	at, why := rr.End()
	what, hint := "backup "+cands[0].ID, "; if it was made before the backup started, choose an earlier backup (or omit --backup)"
	if !explicit {
		what, hint = "the oldest backup "+cands[0].ID, ""
	}
	return fmt.Errorf("no restore point named %q in the archived WAL after the start of %s (%s, timeline %d): the archived WAL ends at %s (%s)%s",
		name, what, cands[0].StartLSN, cands[0].Timeline, at, why, hint)
}

// tlSpan is the part of a timeline history that is on one timeline:
// [begin, end), end 0 for the newest timeline.
type tlSpan struct {
	tli        uint32
	begin, end wal.LSN
}

// tlHistory is the history recovery follows, oldest timeline first.
type tlHistory []tlSpan

func (h tlHistory) String() string {
	var b strings.Builder
	for i, s := range h {
		if i > 0 {
			fmt.Fprintf(&b, " -> %s -> ", s.begin)
		}
		fmt.Fprintf(&b, "%d", s.tli)
	}
	return b.String()
}

// timelineOf is the timeline segment segNo is read from: the newest one
// that had begun in or before it (as PostgreSQL's XLogFileReadAnyTLI).
func (h tlHistory) timelineOf(segNo, segSize uint64) uint32 {
	for i := len(h) - 1; i > 0; i-- {
		if segNo >= uint64(h[i].begin)/segSize {
			return h[i].tli
		}
	}
	return h[0].tli
}

// excludes says why recovery from m cannot follow h, or "".
func (h tlHistory) excludes(m *backup.Manifest) string {
	newest := h[len(h)-1].tli
	for _, s := range h {
		if s.tli != m.Timeline {
			continue
		}
		if s.end != 0 && m.StartLSN >= s.end {
			return fmt.Sprintf("it starts at %s on timeline %d, after timeline %d branched off it at %s, and recovery follows the newest timeline %d",
				m.StartLSN, m.Timeline, s.tli+1, s.end, newest)
		}
		return ""
	}
	return fmt.Sprintf("its timeline %d is not in the history of timeline %d, the newest in the archive, which recovery follows", m.Timeline, newest)
}

// prefetchBytes bounds the memory the search for a restore point uses to
// read segments ahead of the record reader; with the segment being read,
// at most 64 MiB with 16 MiB segments.
const prefetchBytes = 48 << 20

// maxPrefetch is the most segments read ahead, in parallel: it hides the
// repository's latency, and decoding (age, zstd, SHA-256) costs more than
// reading the records.
const maxPrefetch = 3

// prefetcher hands the record reader archived segments in order, reading
// up to depth of the following ones in parallel, each whole into memory
// (and so verified) before it is handed over. With segments too large for
// prefetchBytes it streams them one at a time instead.
type prefetcher struct {
	ctx     context.Context
	cancel  context.CancelFunc
	a       *walArchive
	segSize uint64
	name    func(segNo uint64) string
	depth   int
	next    uint64 // the next segment to start reading
	queue   []*fetch
	free    chan *bytes.Buffer
	wg      sync.WaitGroup
}

type fetch struct {
	segNo uint64
	done  chan struct{}
	buf   *bytes.Buffer
	err   error
}

func newPrefetcher(ctx context.Context, a *walArchive, segSize uint64, name func(uint64) string) *prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	depth := int(min(maxPrefetch, prefetchBytes/segSize))
	return &prefetcher{ctx: ctx, cancel: cancel, a: a, segSize: segSize, name: name, depth: depth,
		free: make(chan *bytes.Buffer, depth+1)}
}

// get returns segment segNo; the segments are asked for in order.
func (p *prefetcher) get(ctx context.Context, segNo uint64) (io.ReadCloser, error) {
	fname := p.name(segNo)
	if p.depth == 0 {
		rc, err := p.a.open(ctx, fname, int64(p.segSize))
		return rc, p.segmentErr(fname, err)
	}
	if len(p.queue) == 0 || p.queue[0].segNo != segNo {
		p.drop()
		p.next = segNo
	}
	for len(p.queue) < p.depth {
		p.start(p.next)
		p.next++
	}
	f := p.queue[0]
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.queue = p.queue[1:]
	p.start(p.next) // keep depth segments in flight
	p.next++
	if f.err != nil {
		p.release(f.buf)
		return nil, p.segmentErr(fname, f.err)
	}
	p.a.log.Debug("reading archived WAL for the restore point", "segment", fname)
	return &heldSegment{Reader: bytes.NewReader(f.buf.Bytes()), buf: f.buf, p: p}, nil
}

func (p *prefetcher) segmentErr(fname string, err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s is not in the archive: %w", fname, wal.ErrNoSegment)
	}
	return err
}

// start reads segment segNo in the background.
func (p *prefetcher) start(segNo uint64) {
	f := &fetch{segNo: segNo, done: make(chan struct{})}
	select {
	case f.buf = <-p.free:
		f.buf.Reset()
	default:
		// Room for the segment and ReadFrom's last read, which finds EOF.
		f.buf = bytes.NewBuffer(make([]byte, 0, p.segSize+bytes.MinRead))
	}
	p.queue = append(p.queue, f)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(f.done)
		// The whole object, verified before it is used.
		f.err = p.a.readVerified(p.ctx, p.name(segNo), f.buf, int64(p.segSize))
	}()
}

// release keeps a segment's buffer for another.
func (p *prefetcher) release(b *bytes.Buffer) {
	select {
	case p.free <- b:
	default:
	}
}

// drop abandons the segments read ahead.
func (p *prefetcher) drop() {
	for _, f := range p.queue {
		<-f.done
		p.release(f.buf)
	}
	p.queue = nil
}

// close stops reading ahead and waits for the readers to end.
func (p *prefetcher) close() {
	p.cancel()
	p.wg.Wait()
	p.queue = nil
}

// heldSegment is a segment read into memory; closing it returns the
// buffer to the prefetcher.
type heldSegment struct {
	*bytes.Reader
	buf *bytes.Buffer
	p   *prefetcher
}

func (h *heldSegment) Close() error {
	if h.buf != nil {
		h.p.release(h.buf)
		h.buf = nil
	}
	return nil
}

// walArchive reads archived WAL files as restore_command (wal-fetch)
// does: from the configured repositories in order, each object decrypted,
// decompressed and verified by objstream, a copy that fails in one
// repository replaced by the next repository's.
type walArchive struct {
	cluster string
	repos   []repo.Repo
	ids     []age.Identity
	log     *slog.Logger
	pool    objstream.Pool
}

// parseHistory parses the history file of timeline tli (wal.ParseHistory)
// into the spans recovery along it replays.
func parseHistory(b []byte, tli uint32) (tlHistory, error) {
	es, err := wal.ParseHistory(b, tli)
	if err != nil {
		return nil, err
	}
	return spans(es, tli), nil
}

// spans turns the ancestors of timeline tli into the spans of each
// timeline, tli's last and open-ended.
func spans(es []wal.HistoryEntry, tli uint32) tlHistory {
	var h tlHistory
	var begin wal.LSN
	for _, e := range es {
		h = append(h, tlSpan{tli: e.Timeline, begin: begin, end: e.Switch})
		begin = e.Switch
	}
	return append(h, tlSpan{tli: tli, begin: begin})
}

// exists reports whether some repository holds the archived file name.
func (a *walArchive) exists(ctx context.Context, name string) (bool, error) {
	key := repo.WALKey(a.cluster, name)
	var errs []error
	for _, r := range a.repos {
		_, err := r.Store.Stat(ctx, key)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			errs = append(errs, fmt.Errorf("repository %s: %s: %w", r.Name, key, err))
		}
	}
	return false, errors.Join(errs...)
}

// open returns the plaintext of the archived file name, at most limit
// bytes, read whole and verified before any of it is returned
// (readVerified). The error wraps storage.ErrNotFound only when no
// repository holds it.
func (a *walArchive) open(ctx context.Context, name string, limit int64) (io.ReadCloser, error) {
	var buf bytes.Buffer
	if err := a.readVerified(ctx, name, &buf, limit); err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
}

// readVerified reads the plaintext of the archived file name into buf
// from the first repository whose copy reads whole, at most limit bytes,
// and verifies (objstream verifies a read ending in io.EOF). A copy that
// fails anywhere is dropped whole and the next repository's read from its
// start: bytes of two copies are never joined, so a forged copy in one
// repository cannot borrow another's verification. buf holds nothing
// when an error is returned. The error wraps storage.ErrNotFound only
// when no repository holds the file.
func (a *walArchive) readVerified(ctx context.Context, name string, buf *bytes.Buffer, limit int64) error {
	key := repo.WALKey(a.cluster, name)
	var errs []error
	found := false
	for _, r := range a.repos {
		buf.Reset()
		rc, err := r.Store.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		found = true
		if err != nil {
			errs = append(errs, fmt.Errorf("repository %s: reading %s: %w", r.Name, key, err))
			continue
		}
		err = a.readCopy(rc, r, key, buf, limit)
		rc.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("repository %s: object %s: %w", r.Name, key, err))
			continue
		}
		if len(errs) > 0 {
			// A later repository's copy replaces a bad one, as wal-fetch does.
			a.log.Warn("reading an archived WAL file from a later repository after failures", "key", key, "repo", r.Name, "errors", errors.Join(errs...))
		}
		return nil
	}
	buf.Reset()
	if !found {
		return fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	return errors.Join(errs...)
}

// readCopy reads one repository's copy whole into buf: to io.EOF, which
// objstream verifies, and no more than limit bytes.
func (a *walArchive) readCopy(rc io.Reader, r repo.Repo, key string, buf *bytes.Buffer, limit int64) error {
	or, err := a.pool.NewReaderOpts(rc, r.SignedReadOptions(key, a.ids, true))
	if err != nil {
		return err
	}
	defer or.Close()
	n, err := buf.ReadFrom(io.LimitReader(or, limit+1))
	if err != nil {
		return err
	}
	if n > limit {
		return fmt.Errorf("larger than %d bytes", limit)
	}
	return nil
}
