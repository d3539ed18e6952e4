package repostat

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/storage/s3store"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
	"github.com/pgdr/pgdr/pkg/wal"
)

// countingStore records the prefixes listed.
type countingStore struct {
	storage.ObjectStore
	mu     sync.Mutex
	listed []string
}

func (c *countingStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	c.mu.Lock()
	c.listed = append(c.listed, prefix)
	c.mu.Unlock()
	return c.ObjectStore.List(ctx, prefix, fn)
}

func (c *countingStore) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.listed
	c.listed = nil
	return out
}

const cluster = "main"

func put(t *testing.T, st storage.ObjectStore, key string) {
	t.Helper()
	if err := st.Put(context.Background(), key, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
}

func segment(tli uint32, segNo uint64) string {
	return wal.SegmentName(tli, segNo, wal.DefaultSegmentSize)
}

// TestIncrementalWAL: after the first round, a round lists the newest
// segment's WAL log, the next one and the next timeline, never the WAL
// prefix; it follows segments into the next log and a new timeline.
func TestIncrementalWAL(t *testing.T) {
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{ObjectStore: fs}
	r := repo.Repo{Name: "local", Store: st}
	for n := uint64(1); n <= 5; n++ {
		put(t, st, repo.WALKey(cluster, segment(1, n)))
	}
	rd := New(cluster, []repo.Repo{r}, nil)
	ctx := context.Background()
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; !s.WALKnown || s.WALName != segment(1, 5) || s.WALEnd != 6*wal.DefaultSegmentSize || s.Read.IsZero() {
		t.Fatalf("first round: %+v", s)
	}
	st.take()
	// Into the next log (256 segments of 16 MiB per log).
	put(t, st, repo.WALKey(cluster, segment(1, 255)))
	put(t, st, repo.WALKey(cluster, segment(1, 256)))
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.WALName != segment(1, 256) {
		t.Fatalf("after the next log: %+v", s)
	}
	for _, p := range st.take() {
		if p == repo.WALPrefix(cluster) {
			t.Fatalf("a later round listed the whole WAL prefix %s", p)
		}
	}
	// A new timeline, with its history file.
	put(t, st, repo.WALKey(cluster, "00000002.history"))
	put(t, st, repo.WALKey(cluster, segment(2, 256)))
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.WALName != segment(2, 256) {
		t.Fatalf("after a new timeline: %+v", s)
	}
	if s := rd.Snapshots()[0]; s.Failures != 0 {
		t.Fatalf("failures: %+v", s)
	}
}

// TestBackupsByTier: complete backups are counted by tier (manual when
// the manifest names none), with the newest end per type; past MaxTiers
// tiers the rest are folded into other; an expired backup drops out; a
// backup without a manifest (running) is not counted.
// On S3 (versitygw) the backup IDs are found by listing with a delimiter.
func TestBackupsByTier(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		fs, err := filestore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := storage.ObjectStore(fs).(storage.DirLister); !ok {
			t.Fatal("the file store does not list directories")
		}
		testBackupsByTier(t, fs)
	})
	t.Run("s3", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts versitygw")
		}
		srv := s3server.Start(t)
		srv.CreateBucket(t, "repostat")
		st, err := s3store.New(t.Context(), s3store.Options{Bucket: "repostat", Prefix: "p", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
			AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, MaxAttempts: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := storage.ObjectStore(st).(storage.DirLister); !ok {
			t.Fatal("the S3 store does not list directories")
		}
		testBackupsByTier(t, st)
	})
}

func testBackupsByTier(t *testing.T, fs storage.ObjectStore) {
	r := repo.Repo{Name: "local", Store: fs}
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	save := func(i int, typ, tier string) *backup.Manifest {
		start := base.Add(time.Duration(i) * time.Hour)
		suffix := map[string]string{"full": "F", "diff": "D", "incr": "I"}[typ]
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: start.Format("20060102T150405") + suffix, Type: typ, Tier: tier, Cluster: cluster,
			StartTime: start, StopTime: start.Add(time.Minute), SegmentSize: wal.DefaultSegmentSize, Timeline: 1}
		if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
		put(t, fs, backup.Prefix(cluster)+m.ID+"/pgdata/base/1/1")
		return m
	}
	save(0, "full", "daily")
	newestIncr := save(1, "incr", "daily")
	manual := save(2, "full", "")
	for i := range MaxTiers + 2 { // 18 more tiers: t00..t17
		save(10+i, "full", fmt.Sprintf("t%02d", i))
	}
	put(t, fs, backup.Prefix(cluster)+"20261205T000000F/pgdata/base/1/1") // running: no manifest yet
	rd := New(cluster, []repo.Repo{r}, nil)
	rd.ReadOnce(ctx)
	s := rd.Snapshots()[0]
	byName := map[string]Tier{}
	for _, tr := range s.Tiers {
		byName[tr.Name] = tr
	}
	if len(s.Tiers) != MaxTiers+1 {
		t.Fatalf("%d tiers, want %d and other: %+v", len(s.Tiers), MaxTiers, s.Tiers)
	}
	if d := byName["daily"]; d.Backups != 2 || !d.Last["incr"].Equal(newestIncr.StopTime) || d.Last["full"].IsZero() {
		t.Fatalf("daily: %+v", d)
	}
	if m := byName[ManualTier]; m.Backups != 1 || !m.Last["full"].Equal(manual.StopTime) {
		t.Fatalf("manual: %+v", m)
	}
	// daily, manual and t00..t13 are the first 16 by name; t14..t17 fold.
	if o := byName[OtherTier]; o.Backups != 4 {
		t.Fatalf("other: %+v (tiers %+v)", o, s.Tiers)
	}
	// Expired: the manifest and objects of the newest incr removed.
	if err := fs.Delete(ctx, backup.ManifestKey(cluster, newestIncr.ID)); err != nil {
		t.Fatal(err)
	}
	rd.ReadOnce(ctx)
	for _, tr := range rd.Snapshots()[0].Tiers {
		if tr.Name == "daily" && (tr.Backups != 1 || !tr.Last["incr"].IsZero()) {
			t.Fatalf("daily after expiry: %+v", tr)
		}
	}
}

// failingStore fails every listing while down.
type failingStore struct {
	storage.ObjectStore
	mu   sync.Mutex
	down bool
}

func (f *failingStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return fmt.Errorf("list %s: connection refused", prefix)
	}
	return f.ObjectStore.List(ctx, prefix, fn)
}

// TestReadFailures: a repository that cannot be read counts a failure and
// keeps its figures and its last successful read time (so the staleness
// shows), while the other repositories are read.
func TestReadFailures(t *testing.T) {
	a, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fa := &failingStore{ObjectStore: a}
	put(t, a, repo.WALKey(cluster, segment(1, 7)))
	put(t, b, repo.WALKey(cluster, segment(1, 7)))
	rd := New(cluster, []repo.Repo{{Name: "a", Store: fa}, {Name: "b", Store: b}}, nil)
	ctx := context.Background()
	rd.ReadOnce(ctx)
	before := rd.Snapshots()
	fa.mu.Lock()
	fa.down = true
	fa.mu.Unlock()
	time.Sleep(10 * time.Millisecond)
	rd.ReadOnce(ctx)
	after := rd.Snapshots()
	if after[0].Failures != 1 || !after[0].Read.Equal(before[0].Read) || after[0].WALName != segment(1, 7) {
		t.Fatalf("a down: %+v, was %+v", after[0], before[0])
	}
	if after[1].Failures != 0 || !after[1].Read.After(before[1].Read) {
		t.Fatalf("b up: %+v, was %+v", after[1], before[1])
	}
	fa.mu.Lock()
	fa.down = false
	fa.mu.Unlock()
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.Failures != 1 || !s.Read.After(before[0].Read) {
		t.Fatalf("a back: %+v", s)
	}
}

// TestTierKeptAtZero: a tier whose last backup expired reads 0 backups
// rather than vanishing.
func TestTierKeptAtZero(t *testing.T) {
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "local", Store: fs}
	ctx := context.Background()
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	m := &backup.Manifest{Format: backup.ManifestFormat, ID: start.Format("20060102T150405") + "F", Type: "full", Tier: "weekly", Cluster: cluster,
		StartTime: start, StopTime: start.Add(time.Minute), SegmentSize: wal.DefaultSegmentSize, Timeline: 1}
	if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
		t.Fatal(err)
	}
	rd := New(cluster, []repo.Repo{r}, nil)
	rd.ReadOnce(ctx)
	if tiers := rd.Snapshots()[0].Tiers; len(tiers) != 1 || tiers[0].Backups != 1 {
		t.Fatalf("tiers %+v", tiers)
	}
	if err := fs.Delete(ctx, backup.ManifestKey(cluster, m.ID)); err != nil {
		t.Fatal(err)
	}
	rd.ReadOnce(ctx)
	if tiers := rd.Snapshots()[0].Tiers; len(tiers) != 1 || tiers[0].Name != "weekly" || tiers[0].Backups != 0 || len(tiers[0].Last) != 0 {
		t.Fatalf("after the tier's last backup expired: %+v", tiers)
	}
}
