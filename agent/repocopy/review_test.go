package repocopy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

const segSize = 16 << 20

// putBackup writes a real (parseable) manifest of backup id with parent
// and two data objects to the sync repository; its WAL runs from segment
// 2 to 3 of timeline 1 (written too unless noWAL).
func (f *fixture) putBackup(t *testing.T, id, typ, parent string, noWAL bool) {
	t.Helper()
	for _, p := range []string{"base/1/1", "global/pg_control"} {
		f.put(t, "main/backup/"+id+"/pgdata/"+p, "data of "+id+" "+p)
	}
	f.putManifest(t, id, typ, parent, 2, 3)
	if !noWAL {
		for _, s := range []uint64{2, 3} {
			f.put(t, repo.WALKey("main", wal.SegmentName(1, s, segSize)), "segment")
		}
	}
}

// putManifest writes a real manifest of backup id whose WAL runs from
// segment first to last of timeline 1.
func (f *fixture) putManifest(t *testing.T, id, typ, parent string, first, last uint64) {
	t.Helper()
	m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: typ, Parent: parent, Cluster: "main",
		SegmentSize: segSize, Timeline: 1, StartLSN: wal.LSN(first*segSize + 40), StopLSN: wal.LSN(last*segSize + 100),
		StartTime: time.Now().UTC(), StopTime: time.Now().UTC()}
	if err := backup.SaveManifest(context.Background(), f.src, m, nil); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) inAsync(key string) bool {
	_, err := f.dst.ObjectStore.Stat(context.Background(), key)
	return err == nil
}

// An incremental backup is not made to exist in the async repository
// (its manifest) while the parent it builds on is not complete there: a
// restore from the async repository alone would pick a backup it cannot
// restore. Here the parent's copy fails (an unreadable object) and waits
// out its backoff while the child's entry, queued after, is worked.
func TestChildNotCompleteBeforeItsParent(t *testing.T) {
	f := newFixture(t)
	f.c.o.MaxBackoff = time.Hour
	full, incr := "20261207T100000F", "20261207T110000I"
	f.putBackup(t, full, backup.TypeFull, "", false)
	f.putBackup(t, incr, backup.TypeIncr, full, false)
	f.src.Store = unreadable{ObjectStore: f.src.Store, key: "main/backup/" + full + "/pgdata/base/1/1"}
	f.c.d.Sources = []repo.Repo{f.src}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: full, Time: base})
	f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: incr, Time: base.Add(time.Hour)})
	for range 3 {
		f.c.Drain(context.Background(), f.target)
	}
	if f.inAsync(backup.ManifestKey("main", incr)) && !f.inAsync(backup.ManifestKey("main", full)) {
		t.Fatalf("before: the async repository holds %s's manifest but not its parent %s's", incr, full)
	}
}

// A backup is not made to exist in the async repository before the WAL
// it needs to be consistent (its start to its stop segment) is there: the
// WAL entries may be waiting out a backoff or lost (a queue write that
// failed), and a restore from the async repository alone would fail.
func TestBackupNotCompleteBeforeItsWAL(t *testing.T) {
	f := newFixture(t)
	f.c.o.MaxBackoff = time.Hour
	id := "20261207T100000F"
	f.putBackup(t, id, backup.TypeFull, "", false)
	// Only the backup is queued (the WAL entries were lost); one of its
	// segments cannot be read now.
	seg := repo.WALKey("main", wal.SegmentName(1, 3, segSize))
	f.src.Store = unreadable{ObjectStore: f.src.Store, key: seg}
	f.c.d.Sources = []repo.Repo{f.src}
	f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: id})
	f.c.Drain(context.Background(), f.target)
	if f.inAsync(backup.ManifestKey("main", id)) && !f.inAsync(seg) {
		t.Fatalf("before: the async repository holds %s's manifest but not its WAL %s", id, seg)
	}
	// Once the segment reads again, the backup and its WAL are copied.
	f.src.Store = f.src.Store.(unreadable).ObjectStore
	f.c.d.Sources = []repo.Repo{f.src}
	f.c.o.MaxBackoff = time.Millisecond
	f.c.retry = map[string]retryState{}
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, k := range []string{backup.ManifestKey("main", id), seg, repo.WALKey("main", wal.SegmentName(1, 2, segSize))} {
		if !f.inAsync(k) {
			t.Fatalf("%s not copied", k)
		}
	}
}

// hookStore runs hook (once) before the first Delete of a key under
// prefix: the moment expiry has listed what it deletes.
type hookStore struct {
	storage.ObjectStore
	prefix string
	once   sync.Once
	hook   func()
}

func (h *hookStore) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, h.prefix) {
		h.once.Do(h.hook)
	}
	return h.ObjectStore.Delete(ctx, key)
}

// A copy of a backup cut short long ago (the async repository's region
// was down for days) is resumed while expiry, run in the async repository,
// removes what it took for a failed backup's leftovers: the copier must
// not write the manifest of a backup whose objects expiry deletes under
// it (before: the copier listed the old objects as already copied, expiry
// deleted them, and the manifest made a backup without its data exist).
func TestResumedCopyRacingAsyncExpiry(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := "20261207T100000F"
	f.putBackup(t, id, backup.TypeFull, "", false)
	f.put(t, "main/cluster.json", "{}")
	// The interrupted copy left one data object in the async repository.
	part := "main/backup/" + id + "/pgdata/base/1/1"
	rc, _ := f.src.Store.Get(ctx, part)
	b, _ := io.ReadAll(rc)
	rc.Close()
	f.dst.ObjectStore.Put(ctx, part, bytes.NewReader(b), int64(len(b)))
	f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: id})
	// Expiry in the async repository, days later by its clock, resumes
	// the copy just after listing the leftover's objects to delete them.
	hs := &hookStore{ObjectStore: f.dst.ObjectStore, prefix: backup.Prefix("main") + id + "/"}
	hs.hook = func() { f.c.Drain(ctx, f.target) }
	later := func() time.Time { return time.Now().Add(3 * expire.DefaultGrace) }
	_, err := expire.Run(ctx, expire.Deps{Cluster: "main", Repos: []repo.Repo{{Name: "dr", Store: hs, Async: true}}, Log: slog.New(slog.DiscardHandler)},
		expire.Options{TrustUnsigned: true, Spec: expire.Spec{Types: map[string]expire.Rule{expire.TypeFull: {Count: 1}}}, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if f.inAsync(backup.ManifestKey("main", id)) {
		for _, k := range []string{part, "main/backup/" + id + "/pgdata/global/pg_control"} {
			if !f.inAsync(k) {
				t.Fatalf("before: the async repository holds %s's manifest but not its object %s", id, k)
			}
		}
	}
	// The copier tries again and completes the backup.
	f.c.mu.Lock()
	f.c.retry = map[string]retryState{}
	f.c.mu.Unlock()
	if ps, _, _ := f.target.Queue.List(); len(ps) == 0 {
		if err := f.c.Reconcile(ctx, f.target); err != nil {
			t.Fatal(err)
		}
	}
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, k := range []string{backup.ManifestKey("main", id), part, "main/backup/" + id + "/pgdata/global/pg_control"} {
		if !f.inAsync(k) {
			t.Fatalf("%s not copied", k)
		}
	}
	n := 0
	f.dst.List(ctx, backup.ReservePrefix("main", id[:len(id)-1]), func(storage.ObjectInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d reservations left after the copies", n)
	}
}

// A queue entry naming a key outside the cluster, or a record only the
// repository it was written to may hold (a reservation, expiry's marks), is
// not carried out: it is quarantined like a corrupt queue file. A queue
// file is written by anyone who can write the state directory; the copier
// reads with the sync repositories' credentials and writes with the async
// one's.
func TestForgedEntryNotCopied(t *testing.T) {
	f := newFixture(t)
	f.put(t, "main/cluster.json", "{}")
	forged := []string{
		"other/wal/00000001/000000010000000000000001",  // another cluster in the same bucket
		"main/expiry/deleting/20261207T100000F",        // would stop copies of that backup
		"main/backup/20261207T100000.reserved/abc",     // would stop expiry in the async repository
		"main/backup/20261207T100000F/backup.manifest", // a manifest alone: a backup without its data
	}
	for _, k := range forged {
		f.put(t, k, "x")
		if err := f.target.Queue.Add(queue.Entry{Kind: queue.KindObject, Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: "../other/backup/20261207T100000F"}); err != nil {
		t.Fatal(err)
	}
	f.c.Drain(context.Background(), f.target)
	for _, k := range forged {
		if f.inAsync(k) {
			t.Fatalf("before: a forged queue entry copied %s into the async repository", k)
		}
	}
	ps, _, _ := f.target.Queue.List()
	if len(ps) != 0 {
		t.Fatalf("%d forged entries still queued (retried forever), want them quarantined", len(ps))
	}
}

// putFirstHook runs hook once before the first Put of a key under prefix.
type putFirstHook struct {
	storage.ObjectStore
	prefix string
	once   sync.Once
	hook   func()
}

func (p *putFirstHook) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, p.prefix) {
		p.once.Do(p.hook)
	}
	return p.ObjectStore.Put(ctx, key, r, size)
}

// Expiry in the async repository does not delete a parent while the copier
// copies a child onto it: the async repository does not hold the child yet
// (so nothing there keeps the parent), the copier has seen the parent's
// manifest. The copier records the child on its parent there first, as a
// backup being taken does (backup.ClaimParent), and expiry's check finds it.
func TestParentNotExpiredUnderACopiedChild(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	full, incr, full2 := "20261205T100000F", "20261206T100000I", "20261207T100000F"
	f.putBackup(t, full, backup.TypeFull, "", false)
	f.putBackup(t, incr, backup.TypeIncr, full, false)
	f.putBackup(t, full2, backup.TypeFull, "", false)
	f.put(t, "main/cluster.json", "{}")
	// The async repository holds both fulls already.
	for _, id := range []string{full, full2} {
		f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: id})
	}
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	// While the child is copied (its parent seen, before its reservation),
	// expiry runs in the async repository
	// (keeping one full: the older one has no child there yet).
	asyncRepo := repo.Repo{Name: "dr", Store: f.dst.ObjectStore, Async: true}
	var expErr error
	hook := &putFirstHook{ObjectStore: f.dst, prefix: backup.ReservePrefix("main", incr[:len(incr)-1])}
	hook.hook = func() {
		_, expErr = expire.Run(ctx, expire.Deps{Cluster: "main", Repos: []repo.Repo{asyncRepo}, Log: slog.New(slog.DiscardHandler)},
			expire.Options{TrustUnsigned: true, Spec: expire.Spec{Types: map[string]expire.Rule{expire.TypeFull: {Count: 1}}}})
	}
	f.target.Repo.Store = hook
	f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: incr})
	f.c.Drain(ctx, f.target)
	if f.inAsync(backup.ManifestKey("main", incr)) && !f.inAsync(backup.ManifestKey("main", full)) {
		t.Fatalf("before: the async repository holds %s's manifest, expiry there deleted its parent %s (expiry: %v)", incr, full, expErr)
	}
	// Tried again, the child is copied with its parent (copied again
	// from the sync repository, where the child keeps it).
	f.target.Repo.Store = f.dst
	f.c.mu.Lock()
	f.c.retry = map[string]retryState{}
	f.c.mu.Unlock()
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, id := range []string{full, incr} {
		if !f.inAsync(backup.ManifestKey("main", id)) {
			t.Fatalf("%s not in the async repository", id)
		}
	}
}

// Expiry in the async repository does not delete the WAL of a backup being
// copied there: the async repository does not hold the backup yet, so its
// plan does not know that WAL is needed (an old backup copied late, a
// parent copied for its child). The copier reserves the backup and writes
// its start record before copying its WAL, as a backup being taken does;
// expiry, listing the start records again before deleting WAL, sees it.
func TestWALNotExpiredUnderACopiedBackup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	old, newer := "20261205T100000F", "20261207T100000F"
	f.putBackup(t, old, backup.TypeFull, "", false) // WAL segments 2-3
	for _, p := range []string{"base/1/1"} {
		f.put(t, "main/backup/"+newer+"/pgdata/"+p, "data")
	}
	f.putManifest(t, newer, backup.TypeFull, "", 8, 8)
	f.put(t, repo.WALKey("main", wal.SegmentName(1, 8, segSize)), "segment")
	f.put(t, "main/cluster.json", "{}")
	f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: newer})
	if errs := f.drain(t); len(errs) > 0 {
		t.Fatal(errs)
	}
	// Expiry starts (its listings) before the copy of the old backup and
	// deletes WAL while it runs: its WAL listing is made to include the
	// old backup's segments, as if they were copied already.
	for _, s := range []uint64{2, 3} {
		k := repo.WALKey("main", wal.SegmentName(1, s, segSize))
		f.dst.ObjectStore.Put(ctx, k, strings.NewReader("segment"), 7)
	}
	asyncRepo := repo.Repo{Name: "dr", Store: f.dst.ObjectStore, Async: true}
	copyDuring := &listHook{ObjectStore: f.dst.ObjectStore, prefix: backup.StartedPrefix("main"), n: 2, hook: func() {
		f.target.Queue.Add(queue.Entry{Kind: queue.KindBackup, Key: old})
		f.c.Drain(ctx, f.target)
	}}
	asyncRepo.Store = copyDuring
	_, err := expire.Run(ctx, expire.Deps{Cluster: "main", Repos: []repo.Repo{asyncRepo}, Log: slog.New(slog.DiscardHandler)},
		expire.Options{TrustUnsigned: true, Spec: expire.Spec{Types: map[string]expire.Rule{expire.TypeFull: {Count: 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if f.inAsync(backup.ManifestKey("main", old)) {
		for _, s := range []uint64{2, 3} {
			if k := repo.WALKey("main", wal.SegmentName(1, s, segSize)); !f.inAsync(k) {
				t.Fatalf("before: the async repository holds %s's manifest, expiry there deleted its WAL %s", old, k)
			}
		}
	}
}

// listHook runs hook before the n-th List of prefix.
type listHook struct {
	storage.ObjectStore
	prefix string
	n      int
	hook   func()
}

func (l *listHook) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if prefix == l.prefix {
		if l.n--; l.n == 0 {
			l.hook()
		}
	}
	return l.ObjectStore.List(ctx, prefix, fn)
}
