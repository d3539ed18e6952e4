package expire

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// rangeStore lists from a given key on (storage.RangeLister) over any
// store, as S3 does, and counts its listings.
type rangeStore struct {
	storage.ObjectStore
	lists atomic.Int64
}

func (s *rangeStore) ListRange(ctx context.Context, prefix, after, upTo string, fn func(storage.ObjectInfo) error) error {
	s.lists.Add(1)
	past := errors.New("past upTo")
	err := s.ObjectStore.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if oi.Key <= after {
			return nil
		}
		if upTo != "" && oi.Key > upTo {
			return past
		}
		return fn(oi)
	})
	if errors.Is(err, past) {
		return nil
	}
	return err
}

func (s *rangeStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return s.ListRange(ctx, prefix, "", "", fn)
}

// TestListWALInParts: the WAL listed in parallel parts is exactly the WAL
// listed in one go, whatever the keys: timelines with history files, a
// gap of many logs, partial and backup history files, the last log of a
// timeline, keys that are not WAL.
func TestListWALInParts(t *testing.T) {
	f := newFixture(t, false)
	var keys []string
	seg1 := func(tli uint32, from, to uint64) {
		for s := from; s <= to; s++ {
			keys = append(keys, repo.WALKey(cluster, wal.SegmentName(tli, s, seg)))
		}
	}
	seg1(1, 0, 2500)          // logs 0..9
	seg1(1, 30000, 31000)     // after a gap of over 100 logs
	seg1(2, 31000, 31300)     // a later timeline
	seg1(3, 1<<40-3, 1<<40-1) // the last log of timeline 3 (segment number 2^32 * 256 - 1)
	for _, n := range []string{"00000002.history", "00000003.history", "0000000100000000000000FF.partial",
		"000000010000000000000010.00000028.backup"} {
		keys = append(keys, repo.WALKey(cluster, n))
	}
	keys = append(keys, repo.WALPrefix(cluster)+"00000001/odd", repo.WALPrefix(cluster)+"zz/000000010000000000000001", repo.WALPrefix(cluster)+"00000004")
	for _, k := range keys {
		f.put(k)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	want := listWAL(context.Background(), f.r.Store, cluster, 1, 1, log)
	if want.err != nil {
		t.Fatal(want.err)
	}
	rs := &rangeStore{ObjectStore: f.r.Store}
	for _, par := range []int{2, 8} {
		rs.lists.Store(0)
		got := listWAL(context.Background(), rs, cluster, par, 1, log) // ranges of one log
		if got.err != nil {
			t.Fatal(got.err)
		}
		if !slices.Equal(got.names, want.names) || !slices.Equal(got.histories, want.histories) {
			t.Fatalf("parallel %d: %d names (histories %v), want %d (%v)", par, len(got.names), got.histories, len(want.names), want.histories)
		}
		// A range per log, a probe per gap, timeline and odd key, and up
		// to par ranges given out past the end of each run of WAL.
		if n := rs.lists.Load(); n > 64 {
			t.Errorf("parallel %d: %d listings", par, n)
		}
	}
	if len(want.names) != len(keys)-3 || !strings.HasSuffix(want.histories[0], ".history") {
		t.Fatalf("sequential listing: %d names of %d keys", len(want.names), len(keys))
	}
}
