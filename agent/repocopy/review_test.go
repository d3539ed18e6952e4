package repocopy

import (
	"context"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/repo"
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
