package walship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/progress"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Timeline summarizes what one repository holds for one timeline.
type Timeline struct {
	Timeline      uint32   `json:"timeline"`
	First         string   `json:"first_segment,omitempty"`
	Last          string   `json:"last_segment,omitempty"`
	Segments      int      `json:"segments"`
	SegmentSize   int64    `json:"segment_size,omitempty"`
	Gaps          []Gap    `json:"gaps"`
	History       bool     `json:"history_file"`
	Partial       []string `json:"partial,omitempty"`
	BackupHistory []string `json:"backup_history,omitempty"`
	StoredBytes   int64    `json:"stored_bytes"`
	// Parent and SwitchLSN are where the timeline branched off, from its
	// history file (timeline 1 has none).
	Parent    uint32 `json:"parent,omitempty"`
	SwitchLSN string `json:"switch_lsn,omitempty"`
	// Fork, when not empty, says why the timeline is a fork rather than a
	// failover: another timeline branches off its parent too, or the
	// parent went on after the branch point (a restored copy or a second
	// primary archived here). A restore refuses to choose between the
	// branches without --target-timeline.
	Fork string `json:"fork,omitempty"`
}

// Gap is a run of missing segments between the first and last archived one.
type Gap struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Count uint64 `json:"count"`
}

// RepoListing is what one repository's archive holds.
type RepoListing struct {
	Repo      string     `json:"repo"`
	URL       string     `json:"url"`
	Timelines []Timeline `json:"timelines"`
	Objects   int        `json:"objects"`
	Errors    []string   `json:"errors,omitempty"`
	// StreamPartials are the WAL receiver's partial copies of segments
	// it is still receiving (repo.StreamPartialKey): outside the archive,
	// neither archived segments nor gaps.
	StreamPartials []StreamPartial `json:"stream_partials,omitempty"`
}

// StreamPartial is one stream partial: the first Bytes bytes of segment
// Segment, as its object's cleartext header records them.
type StreamPartial struct {
	Segment     string    `json:"segment"`
	Timeline    uint32    `json:"timeline"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	Uploaded    time.Time `json:"uploaded"`
}

// Lister lists and verifies what the archive holds. Get one from
// Shipper.Lister.
type Lister struct {
	archive
}

type entry struct {
	name wal.Name
	info storage.ObjectInfo
}

func (l *Lister) entries(ctx context.Context, r repo.Repo) ([]entry, []string, error) {
	var out []entry
	var bad []string
	prefix := repo.WALPrefix(l.cfg.Cluster)
	err := r.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		base := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
		n, err := wal.ParseName(base)
		if err != nil {
			bad = append(bad, fmt.Sprintf("unexpected object %s", oi.Key))
			return nil
		}
		out = append(out, entry{n, oi})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s in repository %s: %w", prefix, r.Name, err)
	}
	return out, bad, nil
}

// List summarizes each repository's archive per timeline, with gaps.
func (l *Lister) List(ctx context.Context) ([]RepoListing, error) {
	var out []RepoListing
	for _, r := range l.repos {
		ents, bad, err := l.entries(ctx, r)
		if err != nil {
			return nil, err
		}
		rl := RepoListing{Repo: r.Name, URL: r.Store.String(), Objects: len(ents), Errors: bad}
		rl.Timelines, err = l.summarize(ctx, r, ents)
		if err != nil {
			return nil, err
		}
		if err := l.forks(ctx, r, ents, rl.Timelines); err != nil {
			rl.Errors = append(rl.Errors, err.Error())
		}
		if rl.StreamPartials, err = l.streamPartials(ctx, r); err != nil {
			rl.Errors = append(rl.Errors, err.Error())
		}
		out = append(out, rl)
	}
	return out, nil
}

func (l *Lister) summarize(ctx context.Context, r repo.Repo, ents []entry) ([]Timeline, error) {
	byTLI := map[uint32]*Timeline{}
	segs := map[uint32][]wal.Name{}
	get := func(tli uint32) *Timeline {
		t := byTLI[tli]
		if t == nil {
			t = &Timeline{Timeline: tli, Gaps: []Gap{}}
			byTLI[tli] = t
		}
		return t
	}
	for _, e := range ents {
		t := get(e.name.Timeline)
		t.StoredBytes += e.info.Size
		switch e.name.Kind {
		case wal.KindSegment:
			segs[e.name.Timeline] = append(segs[e.name.Timeline], e.name)
		case wal.KindHistory:
			t.History = true
		case wal.KindPartial:
			t.Partial = append(t.Partial, e.name.Raw)
		case wal.KindBackupHistory:
			t.BackupHistory = append(t.BackupHistory, e.name.Raw)
		}
	}
	var out []Timeline
	for tli, t := range byTLI {
		ns := segs[tli]
		sort.Slice(ns, func(i, j int) bool { return ns[i].Raw < ns[j].Raw })
		t.Segments = len(ns)
		if len(ns) > 0 {
			t.First, t.Last = ns[0].Raw, ns[len(ns)-1].Raw
			size, err := segmentSize(ctx, r, repo.WALKey(l.cfg.Cluster, ns[0].Raw))
			if err != nil {
				return nil, err
			}
			t.SegmentSize = size
			t.Gaps = gaps(ns, uint64(size))
		}
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Timeline < out[j].Timeline })
	return out, nil
}

// forks fills in each timeline's parent and branch point from its history
// file and flags the forks (see Timeline.Fork), as restore decides where
// it refuses to choose a timeline (agent/restore/timeline.go). The history
// files and the parent's segment holding a branch point are read and
// decrypted, so this needs the identity; without it forks are not checked.
func (l *Lister) forks(ctx context.Context, r repo.Repo, ents []entry, tls []Timeline) error {
	hasHistory := false
	segSize := uint64(wal.DefaultSegmentSize)
	for _, t := range tls {
		hasHistory = hasHistory || t.History
		if t.SegmentSize > 0 {
			segSize = uint64(t.SegmentSize)
		}
	}
	if !hasHistory {
		return nil
	}
	ids, err := l.keys.identities()
	if err != nil {
		return fmt.Errorf("timeline forks not checked: the history files cannot be read: %w", err)
	}
	segs := map[uint32][]uint64{}
	for _, e := range ents {
		if e.name.Kind == wal.KindSegment {
			segs[e.name.Timeline] = append(segs[e.name.Timeline], e.name.SegNo(segSize))
		}
	}
	for _, v := range segs {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	}
	parent := map[uint32]wal.HistoryEntry{}
	kids := map[uint32][]uint32{}
	for i := range tls {
		t := &tls[i]
		if !t.History {
			continue
		}
		key := repo.WALKey(l.cfg.Cluster, wal.HistoryFileName(t.Timeline))
		b, err := l.readObject(ctx, r, key, ids)
		if err != nil {
			return fmt.Errorf("timeline forks not checked: repository %s: %s: %w", r.Name, key, err)
		}
		es, err := wal.ParseHistory(b, t.Timeline)
		if err != nil {
			return fmt.Errorf("timeline forks not checked: repository %s: %s: %w", r.Name, key, err)
		}
		if len(es) > 0 {
			last := es[len(es)-1]
			t.Parent, t.SwitchLSN = last.Timeline, last.Switch.String()
			parent[t.Timeline] = last
			kids[last.Timeline] = append(kids[last.Timeline], t.Timeline)
		}
	}
	for i := range tls {
		t := &tls[i]
		e, ok := parent[t.Timeline]
		if !ok {
			continue
		}
		var why []string
		var sib []string
		for _, k := range kids[e.Timeline] {
			if k != t.Timeline {
				sib = append(sib, fmt.Sprint(k))
			}
		}
		if len(sib) > 0 {
			sort.Strings(sib)
			why = append(why, fmt.Sprintf("timeline %s also branches off timeline %d", strings.Join(sib, ", "), e.Timeline))
		}
		src := func(ctx context.Context, segNo uint64) (io.ReadCloser, error) {
			key := repo.WALKey(l.cfg.Cluster, wal.SegmentName(e.Timeline, segNo, segSize))
			b, err := l.readObject(ctx, r, key, ids)
			if errors.Is(err, storage.ErrNotFound) {
				return nil, fmt.Errorf("%s: %w", key, wal.ErrNoSegment)
			}
			if err != nil {
				return nil, err
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}
		on, what, err := wal.WentOn(ctx, src, segSize, e.Timeline, segs[e.Timeline], e.Switch)
		if err != nil {
			return fmt.Errorf("timeline forks not checked: repository %s: %w", r.Name, err)
		}
		if on {
			why = append(why, fmt.Sprintf("timeline %d goes on after %s, where this one branched off (%s)", e.Timeline, e.Switch, what))
		}
		t.Fork = strings.Join(why, "; ")
	}
	return nil
}

// streamPartials lists r's stream partials with the plaintext size each
// object's cleartext header records (no identity needed).
func (l *Lister) streamPartials(ctx context.Context, r repo.Repo) ([]StreamPartial, error) {
	var out []StreamPartial
	prefix := repo.StreamPrefix(l.cfg.Cluster)
	err := r.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		name, ok := strings.CutSuffix(oi.Key[strings.LastIndex(oi.Key, "/")+1:], ".partial")
		n, err := wal.ParseName(name)
		if !ok || err != nil || n.Kind != wal.KindSegment || oi.Key != repo.StreamPartialKey(l.cfg.Cluster, name) {
			return nil
		}
		out = append(out, StreamPartial{Segment: name, Timeline: n.Timeline, StoredBytes: oi.Size, Uploaded: oi.ModTime})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s in repository %s: %w", prefix, r.Name, err)
	}
	for i := range out {
		key := repo.StreamPartialKey(l.cfg.Cluster, out[i].Segment)
		rc, err := r.Store.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue // archived and deleted since the listing
		}
		if err != nil {
			return out, fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
		}
		h, err := objstream.ReadHeader(rc)
		rc.Close()
		if err != nil {
			return out, fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
		}
		out[i].Bytes = h.PlainSize
	}
	return out, nil
}

// readObject reads, decrypts and verifies one whole archived object.
func (l *Lister) readObject(ctx context.Context, r repo.Repo, key string, ids []age.Identity) ([]byte, error) {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	or, err := l.pool.NewReaderOpts(rc, r.SignedReadOptions(key, ids, true))
	if err != nil {
		return nil, err
	}
	defer or.Close()
	return io.ReadAll(or)
}

// segmentSize reads the plaintext size recorded in a segment object's
// cleartext header (no identity needed).
func segmentSize(ctx context.Context, r repo.Repo, key string) (int64, error) {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	h, err := objstream.ReadHeader(rc)
	if err != nil {
		return 0, fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	if h.PlainSize <= 0 || h.PlainSize&(h.PlainSize-1) != 0 {
		return 0, fmt.Errorf("repository %s: object %s: header records %d bytes, not a segment size", r.Name, key, h.PlainSize)
	}
	return h.PlainSize, nil
}

func gaps(ns []wal.Name, segSize uint64) []Gap {
	out := []Gap{}
	for i := 1; i < len(ns); i++ {
		prev, cur := ns[i-1].SegNo(segSize), ns[i].SegNo(segSize)
		if cur > prev+1 {
			out = append(out, Gap{
				From:  wal.SegmentName(ns[i].Timeline, prev+1, segSize),
				To:    wal.SegmentName(ns[i].Timeline, cur-1, segSize),
				Count: cur - prev - 1,
			})
		}
	}
	return out
}

// VerifyResult is the outcome of reading back one repository's archive.
type VerifyResult struct {
	RepoListing
	Verified int            `json:"verified"`
	Failed   []FailedObject `json:"failed"`
}

// FailedObject names an object that did not read back and verify.
type FailedObject struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

// OK reports whether the repository verified completely with no gap.
func (v VerifyResult) OK() bool {
	if len(v.Failed) > 0 || len(v.Errors) > 0 {
		return false
	}
	for _, t := range v.Timelines {
		if len(t.Gaps) > 0 {
			return false
		}
	}
	return true
}

// Verify reads back, decrypts and checks every archived object in every
// repository, parallel readers per repository, and reports gaps.
//
// progressTo, when not nil, receives a progress line every few seconds (the
// stored bytes read against the repository's total) and a final one, per
// repository.
func (l *Lister) Verify(ctx context.Context, parallel int, progressTo io.Writer) ([]VerifyResult, error) {
	if parallel < 1 {
		parallel = 1
	}
	ids, err := l.keys.identities()
	if err != nil {
		return nil, err
	}
	var out []VerifyResult
	for _, r := range l.repos {
		ents, bad, err := l.entries(ctx, r)
		if err != nil {
			return nil, err
		}
		res := VerifyResult{RepoListing: RepoListing{Repo: r.Name, URL: r.Store.String(), Objects: len(ents), Errors: bad}, Failed: []FailedObject{}}
		res.Timelines, err = l.summarize(ctx, r, ents)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
		var total int64
		for _, e := range ents {
			total += e.info.Size
		}
		var read atomic.Int64
		stopProgress := progress.Start(progressTo, "wal-verify "+r.Name, func() int64 { return total }, read.Load, 0)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, parallel)
		for _, e := range ents {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				err := l.verifyObject(ctx, r, e.info.Key, ids, &read)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.Failed = append(res.Failed, FailedObject{Key: e.info.Key, Error: err.Error()})
				} else {
					res.Verified++
				}
			}()
		}
		wg.Wait()
		stopProgress()
		// Stream partials read back and verify too (one deleted since
		// the listing was archived meanwhile: not a failure).
		if res.StreamPartials, err = l.streamPartials(ctx, r); err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
		for _, sp := range res.StreamPartials {
			n, _ := wal.ParseName(sp.Segment)
			_, err := readPartial(ctx, l.pool, r, l.cfg.Cluster, n, ids)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				res.Failed = append(res.Failed, FailedObject{Key: repo.StreamPartialKey(l.cfg.Cluster, sp.Segment), Error: err.Error()})
			}
		}
		sort.Slice(res.Failed, func(i, j int) bool { return res.Failed[i].Key < res.Failed[j].Key })
		out = append(out, res)
	}
	return out, nil
}

func (l *Lister) verifyObject(ctx context.Context, r repo.Repo, key string, ids []age.Identity, read *atomic.Int64) error {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	or, err := l.pool.NewReaderOpts(&progress.Reader{R: rc, N: read}, r.SignedReadOptions(key, ids, true))
	if err != nil {
		return err
	}
	defer or.Close()
	_, err = io.Copy(io.Discard, or)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}
