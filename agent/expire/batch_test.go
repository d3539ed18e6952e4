package expire

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// batchStore deletes in batches as S3's DeleteObjects does; a key that
// fail accepts is not deleted, and the batch then answers key by key
// (storage.BatchDeleteError), as S3 does in its quiet mode.
type batchStore struct {
	storage.ObjectStore
	fail    func(key string) bool
	batches atomic.Int64
}

func (s *batchStore) DeleteBatch(ctx context.Context, keys []string) error {
	if len(keys) > storage.MaxBatchDelete {
		return fmt.Errorf("batch of %d keys", len(keys))
	}
	s.batches.Add(1)
	var failed []string
	for _, k := range keys {
		if s.fail != nil && s.fail(k) {
			failed = append(failed, k)
			continue
		}
		if err := s.ObjectStore.Delete(ctx, k); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return &storage.BatchDeleteError{Failed: failed, Err: fmt.Errorf("delete %q: AccessDenied (%d of %d keys failed)", failed[0], len(failed), len(keys))}
	}
	return nil
}

// TestRunBatchPartlyFails: a WAL batch the store answers key by key with
// some keys failed is counted exactly (the keys that went, not none and
// not all), the run fails, the repository stays consistent, and the next
// run deletes what is left.
func TestRunBatchPartlyFails(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 3, 4, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 1500, 1500, 4, nil)
	f.wal(1, 1501) // 1,499 WAL files to expire: two batches
	walCount := func() int {
		n := 0
		if err := f.r.Store.List(context.Background(), repo.WALPrefix(cluster), func(storage.ObjectInfo) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	failing := map[string]bool{}
	for _, s := range []uint64{7, 700, 1400} {
		failing[repo.WALKey(cluster, wal.SegmentName(1, s, seg))] = true
	}
	bs := &batchStore{ObjectStore: f.r.Store, fail: func(k string) bool { return failing[k] }}
	res, err := Run(context.Background(), f.deps(bs), Options{TrustUnsigned: true, Spec: fullRule(1), Parallel: 1})
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("run with failing keys: %v", err)
	}
	left := walCount()
	if gone := 1501 - left; res[0].WALDeleted != gone {
		t.Fatalf("WALDeleted %d, but %d WAL files were deleted", res[0].WALDeleted, gone)
	}
	if res[0].WALDeleted == 0 {
		t.Fatal("no WAL deleted at all: the test does not test a partial batch")
	}
	if !slices.Equal(res[0].Deleted, []string{"20261201T000000F"}) || !f.gone("20261201T000000F") {
		t.Fatalf("deleted %v", res[0].Deleted)
	}
	f.consistent()
	res, err = Run(context.Background(), f.deps(&batchStore{ObjectStore: f.r.Store}), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].WALDeleted != left-2 || walCount() != 2 {
		t.Fatalf("the next run deleted %d WAL files, %d left (want 2: segments 1500 and 1501)", res[0].WALDeleted, walCount())
	}
	f.consistent()
}

// failDataStore fails the deletion of every data object of one backup.
type failDataStore struct {
	storage.ObjectStore
	id string
}

func (s *failDataStore) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, backup.Prefix(cluster)+s.id+"/pgdata/") {
		return fmt.Errorf("injected failure deleting %s", key)
	}
	return s.ObjectStore.Delete(ctx, key)
}

// TestRunDataLeft: the data of expired backups goes after all their
// manifests; when deleting it fails, the backups are reported deleted
// (their manifests are gone) and DataLeft names the one whose data is left,
// the WAL still goes, and the next run (past the grace period) removes the
// rest as a leftover.
func TestRunDataLeft(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 96*time.Hour, 2, 3, 4, nil)
	f.backup("20261202T000000I", TypeIncr, "20261201T000000F", 72*time.Hour, 4, 4, 3, nil)
	f.backup("20261203T000000F", TypeFull, "", 48*time.Hour, 6, 6, 4, nil)
	f.backup("20261204T000000F", TypeFull, "", 24*time.Hour, 8, 8, 4, nil)
	f.wal(1, 9)
	res, err := Run(context.Background(), f.deps(&failDataStore{ObjectStore: f.r.Store, id: "20261202T000000I"}),
		Options{TrustUnsigned: true, Spec: fullRule(1), Parallel: 1})
	if err == nil || !strings.Contains(err.Error(), "20261202T000000I") {
		t.Fatalf("run: %v", err)
	}
	if !slices.Equal(res[0].Deleted, []string{"20261203T000000F", "20261202T000000I", "20261201T000000F"}) {
		t.Fatalf("deleted %v", res[0].Deleted)
	}
	// Parallel 1: the backups' data goes one by one in the order they
	// were expired, and the first failure stops the rest.
	if !slices.Equal(res[0].DataLeft, []string{"20261202T000000I", "20261201T000000F"}) {
		t.Fatalf("data left %v", res[0].DataLeft)
	}
	if res[0].WALDeleted != 7 {
		t.Fatalf("WAL deleted %d, want 7", res[0].WALDeleted)
	}
	if !f.gone("20261203T000000F") || f.exists(backup.ManifestKey(cluster, "20261202T000000I")) || f.gone("20261202T000000I") {
		t.Fatal("want 20261203T000000F gone and only 20261202T000000I's data (not its manifest) left")
	}
	f.consistent()
	later := func() time.Time { return time.Now().Add(DefaultGrace + time.Hour) }
	res, err = Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1), Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].Leftovers, []string{"20261201T000000F", "20261202T000000I"}) || !f.gone("20261201T000000F") || !f.gone("20261202T000000I") {
		t.Fatalf("leftovers %v", res[0].Leftovers)
	}
	for s := uint64(1); s <= 9; s++ {
		if got, want := f.exists(repo.WALKey(cluster, wal.SegmentName(1, s, seg))), s >= 8; got != want {
			t.Errorf("WAL segment %d present %v, want %v", s, got, want)
		}
	}
	f.consistent()
}
