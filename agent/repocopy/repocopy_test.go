package repocopy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// corrupting is a store whose first Puts of chosen keys store a damaged
// copy (one byte flipped), as a faulty network or disk would, and that
// records the order of completed Puts.
type corrupting struct {
	storage.ObjectStore
	mu      sync.Mutex
	damage  map[string]int // key -> Puts still to damage
	written []string
}

func (c *corrupting) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	c.mu.Lock()
	bad := c.damage[key] > 0
	if bad {
		c.damage[key]--
	}
	c.mu.Unlock()
	if bad {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 0xff
		r = bytes.NewReader(b)
	}
	if err := c.ObjectStore.Put(ctx, key, r, size); err != nil {
		return err
	}
	c.mu.Lock()
	c.written = append(c.written, key)
	c.mu.Unlock()
	return nil
}

type fixture struct {
	src    repo.Repo
	dst    *corrupting
	target Target
	c      *Copier
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ss, err := filestore.New(filepath.Join(dir, "sync"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := filestore.New(filepath.Join(dir, "async"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(filepath.Join(dir, "state", "repocopy", "dr"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{src: repo.Repo{Name: "local", Store: ss}, dst: &corrupting{ObjectStore: ds, damage: map[string]int{}}}
	f.target = Target{Repo: repo.Repo{Name: "dr", Store: f.dst, Async: true}, Queue: q, Concurrency: 2}
	// Failed entries are retried at once (MaxBackoff caps each entry's).
	f.c = New(Deps{Cluster: "main", Sources: []repo.Repo{f.src}, Targets: []Target{f.target}, Log: slog.New(slog.DiscardHandler)}, Options{MaxBackoff: time.Millisecond})
	return f
}

func (f *fixture) put(t *testing.T, key, body string) {
	t.Helper()
	if err := f.src.Store.Put(context.Background(), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) get(t *testing.T, key string) string {
	t.Helper()
	rc, err := f.dst.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("async repository: %v", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// drain runs Drain until the queue is empty (bounded).
func (f *fixture) drain(t *testing.T) []error {
	t.Helper()
	var errs []error
	for range 20 {
		_, err := f.c.Drain(context.Background(), f.target)
		if err != nil {
			errs = append(errs, err)
		}
		if ps, _, _ := f.target.Queue.List(); len(ps) == 0 {
			return errs
		}
		time.Sleep(2 * time.Millisecond) // past the failed entries' backoff
	}
	t.Fatal("queue not drained in 20 rounds")
	return nil
}

// A damaged upload is found by the read-back, deleted and copied again;
// the entry stays queued until the copy verifies.
func TestCorruptedUploadIsRetried(t *testing.T) {
	f := newFixture(t)
	key := "main/wal/00000001/000000010000000000000001"
	f.put(t, key, strings.Repeat("wal ", 1000))
	f.dst.damage[key] = 1
	if err := f.target.Queue.Add(queue.Entry{Kind: queue.KindObject, Key: key, Size: 4000}); err != nil {
		t.Fatal(err)
	}
	_, err := f.c.Drain(context.Background(), f.target)
	if !errors.Is(err, ErrVerify) {
		t.Fatalf("first round: %v, want ErrVerify", err)
	}
	if _, err := f.dst.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the damaged copy was left in place: %v", err)
	}
	if ps, _, _ := f.target.Queue.List(); len(ps) != 1 {
		t.Fatalf("entry gone after a failed verification: %v", ps)
	}
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := f.get(t, key); got != strings.Repeat("wal ", 1000) {
		t.Fatal("copy differs")
	}
}

// A backup is copied data first, manifest last; one whose manifest the
// sync repository no longer holds (expired) is not copied, nor is an
// object gone from it.
func TestBackupManifestLastAndExpiredNotCopied(t *testing.T) {
	f := newFixture(t)
	id, gone := "20261207T100000F", "20261206T100000F"
	for _, p := range []string{"base/1/1", "base/1/2", "global/pg_control"} {
		f.put(t, "main/backup/"+id+"/pgdata/"+p, "data "+p)
		f.put(t, "main/backup/"+gone+"/pgdata/"+p, "data "+p) // manifest already deleted by expiry
	}
	f.putManifest(t, id, backup.TypeFull, "", 8, 8)
	f.put(t, "main/wal/00000001/000000010000000000000008", "the backup's WAL")
	for _, e := range []queue.Entry{{Kind: queue.KindBackup, Key: id}, {Kind: queue.KindBackup, Key: gone}, {Kind: queue.KindObject, Key: "main/wal/00000001/000000010000000000000009"}} {
		if err := f.target.Queue.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	f.dst.damage["main/backup/"+id+"/pgdata/base/1/2"] = 1
	f.drain(t)
	// (The copy's reservations and start records aside.)
	w := slices.DeleteFunc(slices.Clone(f.dst.written), func(k string) bool {
		return strings.Contains(k, backup.ReservedSuffix+"/") || strings.HasPrefix(k, backup.StartedPrefix("main"))
	})
	if len(w) != 6 || w[len(w)-1] != backup.ManifestKey("main", id) {
		t.Fatalf("writes %v: want the backup's WAL, the 3 data objects (one twice: damaged, then again), then the manifest", w)
	}
	n := 0
	f.dst.List(context.Background(), "main/backup/"+gone, func(storage.ObjectInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("the expired backup was copied (%d objects)", n)
	}
	// A reconcile finds nothing more to copy.
	if err := f.c.Reconcile(context.Background(), f.target); err != nil {
		t.Fatal(err)
	}
	if ps, _, _ := f.target.Queue.List(); len(ps) != 0 {
		t.Fatalf("reconcile queued %d entries after catch-up", len(ps))
	}
}

// Reconcile queues exactly what the async repository lacks, skipping
// reservations, expiry's records and backups without a manifest; a
// corrupt queue file is kept, reported and its work found again.
func TestReconcile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.put(t, "main/cluster.json", "{}")
	f.put(t, "main/wal/00000001/000000010000000000000001", "one")
	f.put(t, "main/wal/00000001/000000010000000000000002", "two")
	f.putManifest(t, "20261207T100000F", backup.TypeFull, "", 1, 1) // its WAL: in both already
	f.put(t, "main/backup/20261207T100000F/pgdata/PG_VERSION", "15")
	f.put(t, "main/backup/20261207T110000F/pgdata/PG_VERSION", "15") // in progress or expired
	f.put(t, "main/backup/20261207T120000.reserved/abc", "r")
	f.put(t, "main/expiry/started/20261207T120000", "s")
	f.put(t, "main/expiry/deleting/20261206T100000F", "d")
	f.put(t, "main/pins/20261207T100000F.pin", "p")
	f.put(t, "main/wal-stream/00000001/000000010000000000000003.partial", "receiver's") // written everywhere by the receiver itself
	// The async repository already holds one WAL file.
	f.dst.ObjectStore.Put(ctx, "main/wal/00000001/000000010000000000000001", strings.NewReader("one"), 3)
	if err := f.c.Reconcile(ctx, f.target); err != nil {
		t.Fatal(err)
	}
	ps, _, _ := f.target.Queue.List()
	var got []string
	for _, p := range ps {
		e, _ := f.target.Queue.Load(p)
		got = append(got, e.Kind+":"+e.Key)
	}
	want := "backup:20261207T100000F,object:main/cluster.json,object:main/pins/20261207T100000F.pin,object:main/wal/00000001/000000010000000000000002"
	if g := strings.Join(sortedCopy(got), ","); g != want {
		t.Fatalf("queued %s\nwant   %s", g, want)
	}
	// A second reconcile adds nothing already queued.
	if err := f.c.Reconcile(ctx, f.target); err != nil {
		t.Fatal(err)
	}
	if ps2, _, _ := f.target.Queue.List(); len(ps2) != len(ps) {
		t.Fatalf("second reconcile: %d entries, want %d", len(ps2), len(ps))
	}
	// Damage one queue file: the round reports it by name, keeps it
	// (quarantined), copies the rest, and the next reconcile re-queues it.
	damaged := filepath.Join(f.target.Queue.Dir(), ps[0].Name)
	if err := writeFile(damaged, "not json"); err != nil {
		t.Fatal(err)
	}
	errs := f.drain(t)
	if len(errs) == 0 || !errors.Is(errs[0], queue.ErrCorrupt) || !strings.Contains(errs[0].Error(), damaged) {
		t.Fatalf("errors %v: want one naming %s", errs, damaged)
	}
	if !fileExists(damaged + ".corrupt") {
		t.Fatal("the corrupt queue file was not kept")
	}
	if err := f.c.Reconcile(ctx, f.target); err != nil {
		t.Fatal(err)
	}
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, k := range []string{"main/cluster.json", "main/pins/20261207T100000F.pin", "main/wal/00000001/000000010000000000000002", "main/backup/20261207T100000F/backup.manifest", "main/backup/20261207T100000F/pgdata/PG_VERSION"} {
		f.get(t, k)
	}
	st := f.c.Status()
	if len(st) != 1 || st[0].CopiedObjects != 5 || st[0].LagObjects != 0 {
		t.Fatalf("status %+v", st)
	}
}

// Entries are copied oldest first (one worker: in exactly that order),
// whatever order they were queued in.
func TestDrainOldestFirst(t *testing.T) {
	f := newFixture(t)
	f.target.Concurrency = 1
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var want []string
	for i := range 5 {
		want = append(want, fmt.Sprintf("main/wal/00000001/00000001000000000000000%d", i+1))
	}
	for _, i := range []int{3, 0, 4, 1, 2} {
		f.put(t, want[i], "segment")
		if err := f.target.Queue.Add(queue.Entry{Kind: queue.KindObject, Key: want[i], Time: base.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := strings.Join(f.dst.written, " "); got != strings.Join(want, " ") {
		t.Fatalf("copied in the order\n%s\nwant\n%s", got, strings.Join(want, " "))
	}
}

// failing is a store that fails every call while down is set.
type failing struct {
	storage.ObjectStore
	down atomic.Bool
}

var errDown = errors.New("connection refused (test outage)")

func (f *failing) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if f.down.Load() {
		return errDown
	}
	return f.ObjectStore.Put(ctx, key, r, size)
}

func (f *failing) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.ObjectStore.Get(ctx, key)
}

func (f *failing) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if f.down.Load() {
		return storage.ObjectInfo{}, errDown
	}
	return f.ObjectStore.Stat(ctx, key)
}

func (f *failing) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if f.down.Load() {
		return errDown
	}
	return f.ObjectStore.List(ctx, prefix, fn)
}

// Run against an async repository that is down: the queue and the lag
// grow, the error shows; once it is back, everything already in the sync
// repository (queued or not) is copied.
func TestRunCatchesUpAfterAnOutage(t *testing.T) {
	f := newFixture(t)
	down := &failing{ObjectStore: f.dst.ObjectStore}
	down.down.Store(true)
	f.target.Repo.Store = down
	f.c = New(Deps{Cluster: "main", Sources: []repo.Repo{f.src}, Targets: []Target{f.target}, Log: slog.New(slog.DiscardHandler)},
		Options{Poll: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Reconcile: time.Hour})
	f.put(t, "main/cluster.json", "{}")
	f.put(t, "main/pins/x.pin", "not queued by anyone: the reconcile finds it")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	var keys []string
	for i := range 6 {
		k := fmt.Sprintf("main/wal/00000001/00000001000000000000000%d", i+1)
		keys = append(keys, k)
		f.put(t, k, "segment")
		if err := f.target.Queue.Add(queue.Entry{Kind: queue.KindObject, Key: k, Size: 7}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the outage to show", func() bool {
		s := f.c.Status()[0]
		return s.LagObjects == 6 && s.LagBytes == 42 && s.LastError != "" && strings.Contains(s.LastError, "test outage")
	})
	down.down.Store(false)
	// The reconcile that failed at the start is retried (5 s later).
	waitFor(t, "the catch-up", func() bool {
		s := f.c.Status()[0]
		_, err := down.Stat(context.Background(), "main/pins/x.pin")
		return s.LagObjects == 0 && s.CopiedObjects == 8 && err == nil
	})
	for _, k := range keys {
		f.get(t, k)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An entry that cannot be copied (its object unreadable in the sync
// repository) waits out its own backoff and does not hold up the entries
// queued after it.
func TestFailingEntryDoesNotBlockTheQueue(t *testing.T) {
	f := newFixture(t)
	f.c.o.MaxBackoff = time.Hour
	f.target.Concurrency = 1
	bad := "main/wal/00000001/000000010000000000000001"
	f.put(t, bad, "segment")
	f.src.Store = unreadable{ObjectStore: f.src.Store, key: bad}
	f.c.d.Sources = []repo.Repo{f.src}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	f.target.Queue.Add(queue.Entry{Kind: queue.KindObject, Key: bad, Time: base})
	var good []string
	for i := range 3 {
		k := fmt.Sprintf("main/wal/00000001/00000001000000000000000%d", i+2)
		good = append(good, k)
		f.put(t, k, "segment")
		f.target.Queue.Add(queue.Entry{Kind: queue.KindObject, Key: k, Time: base.Add(time.Duration(i+1) * time.Second)})
	}
	for range 3 {
		f.c.Drain(context.Background(), f.target)
	}
	for _, k := range good {
		f.get(t, k)
	}
	ps, _, _ := f.target.Queue.List()
	if len(ps) != 1 {
		t.Fatalf("%d entries left, want the failing one only", len(ps))
	}
}

// unreadable is a store whose object key lists and stats but cannot be read.
type unreadable struct {
	storage.ObjectStore
	key string
}

func (u unreadable) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if key == u.key {
		return nil, errors.New("input/output error (test)")
	}
	return u.ObjectStore.Get(ctx, key)
}
