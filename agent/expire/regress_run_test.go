package expire

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// takeDuring runs a whole backup (reserve, record as started, claim a
// parent as backup.Take does, write the manifest, release) while expiry
// deletes the first backup it expires: its manifest is gone, its marker
// not yet (expiry is deleting its record as its parent's child).
type takeDuring struct {
	storage.ObjectStore
	f       *fixture
	parent  string
	done    atomic.Bool
	id      string
	claimed error
}

func (s *takeDuring) Delete(ctx context.Context, key string) error {
	if key == backup.ChildKey(cluster, "20261205T000000I", "20261206T000000I") && !s.done.Swap(true) {
		// A backup host two hours behind the expiring host: its stamp
		// says nothing of when it ran.
		stamp := time.Now().UTC().Add(-2 * time.Hour).Format("20060102T150405")
		rk := backup.Prefix(cluster) + stamp + backup.ReservedSuffix + "/n"
		s.f.put(rk)
		s.f.put(backup.StartedKey(cluster, stamp))
		s.id = stamp + "I"
		s.claimed = backup.ClaimParent(ctx, []repo.Repo{s.f.r}, cluster, s.parent, s.id)
		if s.claimed == nil {
			s.f.backup(s.id, TypeIncr, s.parent, 0, 9, 9, 1, nil)
		}
		if err := s.ObjectStore.Delete(ctx, rk); err != nil { // release
			return err
		}
	}
	return s.ObjectStore.Delete(ctx, key)
}

// TestRunBackupCompletesDuringDelete: a backup that starts and completes
// while expiry deletes another backup never ends up with its parent
// gone (R2, R3): building on the next backup to expire, expiry sees its
// child record and stops before deleting it; building on the backup being
// deleted, the backup sees the marker and is not recorded. Either way no
// WAL goes, since a backup started during the run (R5).
func TestRunBackupCompletesDuringDelete(t *testing.T) {
	for _, parent := range []string{"20261205T000000I", "20261206T000000I"} {
		t.Run(parent, func(t *testing.T) {
			f := newFixture(t, false)
			f.backup("20261204T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, nil)
			f.backup("20261205T000000I", TypeIncr, "20261204T000000F", 48*time.Hour, 4, 4, 2, nil)
			f.backup("20261206T000000I", TypeIncr, "20261205T000000I", 24*time.Hour, 6, 6, 2, nil)
			f.backup("20261207T000000F", TypeFull, "", time.Hour, 8, 8, 1, nil)
			f.wal(1, 10)
			st := &takeDuring{ObjectStore: f.r.Store, f: f, parent: parent}
			res, err := Run(context.Background(), f.deps(st), Options{TrustUnsigned: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}, TypeIncr: {Age: time.Hour}}}})
			t.Logf("err %v deleted %v new %s claim %v", err, res[0].Deleted, st.id, st.claimed)
			if !st.done.Load() {
				t.Fatal("no backup was taken during the run")
			}
			switch parent {
			case "20261205T000000I":
				if !errors.Is(err, ErrBackupStarted) || st.claimed != nil {
					t.Errorf("want expiry stopped by the new child; err %v, claim %v", err, st.claimed)
				}
				if f.gone(parent) {
					t.Errorf("parent %s of new backup %s deleted", parent, st.id)
				}
			default:
				if !errors.Is(st.claimed, backup.ErrParentExpiring) {
					t.Errorf("the backup building on %s, being deleted, was not refused: %v", parent, st.claimed)
				}
				if err != nil {
					t.Errorf("run: %v", err)
				}
				if f.exists(backup.ManifestKey(cluster, st.id)) {
					t.Errorf("backup %s recorded on a parent being deleted", st.id)
				}
			}
			if res[0].WALDeleted != 0 {
				t.Errorf("%d WAL files deleted although a backup started during the run", res[0].WALDeleted)
			}
			if f.exists(backup.DeletingKey(cluster, "20261205T000000I")) || f.exists(backup.DeletingKey(cluster, "20261206T000000I")) {
				t.Error("a deleting marker was left behind")
			}
			f.consistent()
		})
	}
}

// TestRunStaleChildRecord: the child record of a backup that failed long
// ago (no manifest, no fresh reservation) does not keep its parent forever,
// while a fresh one does.
func TestRunStaleChildRecord(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261204T000000F", TypeFull, "", 72*time.Hour, 2, 2, 1, nil)
	f.backup("20261207T000000F", TypeFull, "", time.Hour, 8, 8, 1, nil)
	f.put(backup.ChildKey(cluster, "20261204T000000F", "20261205T000000I"))
	_, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if !errors.Is(err, ErrBackupStarted) || f.gone("20261204T000000F") {
		t.Fatalf("a fresh child record did not stop expiry: %v", err)
	}
	later := func() time.Time { return time.Now().Add(DefaultGrace + time.Hour) }
	res, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1), Now: later})
	if err != nil || !f.gone("20261204T000000F") {
		t.Fatalf("a stale child record kept its parent: %v %+v", err, res)
	}
	if f.exists(backup.ChildKey(cluster, "20261204T000000F", "20261205T000000I")) {
		t.Error("the expired backup's child records were left")
	}
}

// TestRunNewStartedRecordSkipsWAL: a backup recorded as started after the
// listing (its reservation already released) stops the WAL deletion (R5).
type startDuring struct {
	storage.ObjectStore
	f    *fixture
	done atomic.Bool
}

func (s *startDuring) Delete(ctx context.Context, key string) error {
	if !s.done.Swap(true) {
		s.f.put(backup.StartedKey(cluster, "20261201T000000"))
	}
	return s.ObjectStore.Delete(ctx, key)
}

func TestRunNewStartedRecordSkipsWAL(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 1, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 1, nil)
	f.wal(1, 7)
	res, err := Run(context.Background(), f.deps(&startDuring{ObjectStore: f.r.Store, f: f}), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].WALDeleted != 0 || res[0].WALSkipped == "" {
		t.Errorf("WAL deleted %d, skipped %q: want none deleted", res[0].WALDeleted, res[0].WALSkipped)
	}
	// Without it the same run deletes the WAL.
	f2 := newFixture(t, false)
	f2.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 1, nil)
	f2.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 1, nil)
	f2.wal(1, 7)
	if res, err := Run(context.Background(), f2.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)}); err != nil || res[0].WALDeleted == 0 {
		t.Errorf("control run: %v, %+v", err, res)
	}
}

// aged makes every listed object look 10 minutes old.
type aged struct{ storage.ObjectStore }

func (s aged) List(ctx context.Context, p string, fn func(storage.ObjectInfo) error) error {
	return s.ObjectStore.List(ctx, p, func(oi storage.ObjectInfo) error {
		oi.ModTime = oi.ModTime.Add(-10 * time.Minute)
		return fn(oi)
	})
}

// TestRunGraceFloor: a grace period below MinGrace is refused, so a backup
// running for 10 minutes (reservation and data 10 minutes old) is never
// taken for a leftover (R7).
func TestRunGraceFloor(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 0, nil)
	stamp := "20261207T050000"
	f.put(backup.Prefix(cluster) + stamp + backup.ReservedSuffix + "/n")
	data := backup.Prefix(cluster) + stamp + "F/pgdata/base/1/1000"
	f.put(data)
	if _, err := Run(context.Background(), f.deps(aged{f.r.Store}), Options{TrustUnsigned: true, Spec: fullRule(1), Grace: time.Minute}); err == nil || !strings.Contains(err.Error(), "below the minimum") {
		t.Errorf("grace 1m accepted: %v", err)
	}
	res, err := Run(context.Background(), f.deps(aged{f.r.Store}), Options{TrustUnsigned: true, Spec: fullRule(1), Grace: MinGrace})
	if err != nil {
		t.Fatal(err)
	}
	if !f.exists(data) || len(res[0].Leftovers) != 0 {
		t.Errorf("the running backup's data was deleted (leftovers %v)", res[0].Leftovers)
	}
}

// TestDecideInProgressKeepsWAL: while a backup is in progress no WAL goes:
// a standby's backup may start far behind the kept backups (R5).
func TestDecideInProgressKeepsWAL(t *testing.T) {
	p, err := Decide(Input{Backups: []Backup{bk("F", TypeFull, "", day(-0.5), 1, 50, 51)}, WAL: segs(1, 1, 60), Now: now,
		Spec: fullRule(1), InProgress: []string{"20261207T110000"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.WALDeleteNames) > 0 {
		t.Errorf("a backup is in progress, yet %d WAL files (%s..) go", len(p.WALDeleteNames), p.WALDeleteNames[0])
	}
}

// oddList adds, to every WAL listing, a key with a WAL base name that is
// not a valid key (S3 allows anything).
type oddList struct{ storage.ObjectStore }

func (s oddList) List(ctx context.Context, p string, fn func(storage.ObjectInfo) error) error {
	if err := s.ObjectStore.List(ctx, p, fn); err != nil {
		return err
	}
	if strings.HasPrefix(repo.WALPrefix(cluster), p) || strings.HasPrefix(p, repo.WALPrefix(cluster)) {
		for _, k := range []string{"main/wal/x/../000000010000000000000001", "main/wal/000000010000000000000002", "main/wal/00000001/a/000000010000000000000003"} {
			if err := fn(storage.ObjectInfo{Key: k, ModTime: time.Now()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestRunIgnoresOddWALKeys: a listed key under the WAL prefix that is not
// exactly where wal-push puts that WAL file is ignored, so it neither
// blocks the WAL deletion of every run nor is taken for archive (R6).
func TestRunIgnoresOddWALKeys(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 0, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 0, nil)
	f.wal(3, 7)
	res, err := Run(context.Background(), f.deps(oddList{f.r.Store}), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatalf("odd keys in the bucket stop WAL expiry: %v", err)
	}
	if res[0].WALDeleted != 3 {
		t.Errorf("%d WAL files deleted, want 3 (segments 3-5)", res[0].WALDeleted)
	}
}

// TestRunUnsignedNeedsTrust: without signing every manifest counts, so two
// forged (data-less) newer "fulls" would push the real ones out of keep
// full 2: a deleting run there is refused unless trusted explicitly; a dry
// run shows the plan (R9).
func TestRunUnsignedNeedsTrust(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, nil)
	f.backup("20261202T000000F", TypeFull, "", 48*time.Hour, 4, 4, 2, nil)
	f.backup("20261206T000000F", TypeFull, "", 1*time.Hour, 9, 9, 0, nil) // forged, no data
	f.backup("20261206T010000F", TypeFull, "", 0, 9, 9, 0, nil)           // forged, no data
	f.wal(1, 10)
	spec := Spec{Types: map[string]Rule{TypeFull: {Count: 2}}}
	_, err := Run(context.Background(), f.deps(nil), Options{Spec: spec})
	if !errors.Is(err, ErrUnsigned) {
		t.Errorf("run without signing nor TrustUnsigned: %v", err)
	}
	if f.gone("20261201T000000F") || f.gone("20261202T000000F") {
		t.Errorf("real backups deleted because of forged manifests (err %v)", err)
	}
	res, err := Run(context.Background(), f.deps(nil), Options{Spec: spec, DryRun: true})
	if err != nil || len(res[0].Plan.Delete) != 2 {
		t.Errorf("dry run: %v %+v", err, res)
	}
	// Signed: the forged unsigned manifests do not count.
	g := newFixture(t, true)
	g.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, g.signer)
	g.backup("20261202T000000F", TypeFull, "", 48*time.Hour, 4, 4, 2, g.signer)
	g.backup("20261206T000000F", TypeFull, "", 1*time.Hour, 9, 9, 0, nil)
	g.backup("20261206T010000F", TypeFull, "", 0, 9, 9, 0, nil)
	if _, err := Run(context.Background(), g.deps(nil), Options{Spec: spec}); err != nil || g.gone("20261201T000000F") || g.gone("20261202T000000F") {
		t.Errorf("signed repository: %v", err)
	}
}

// pinDuring pins a backup when the first manifest is deleted.
type pinDuring struct {
	storage.ObjectStore
	f    *fixture
	id   string
	done atomic.Bool
}

func (s *pinDuring) Delete(ctx context.Context, key string) error {
	if strings.HasSuffix(key, "/backup.manifest") && !s.done.Swap(true) {
		if _, err := SetPin(ctx, []repo.Repo{s.f.r}, nil, cluster, "n1", s.id, "hold", time.Now()); err != nil {
			return err
		}
	}
	return s.ObjectStore.Delete(ctx, key)
}

// TestRunPinnedDuringRun: a backup pinned after the run read the pins is
// not deleted: the run stops before it, and before any WAL (R10).
func TestRunPinnedDuringRun(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, nil)
	f.backup("20261202T000000F", TypeFull, "", 48*time.Hour, 4, 4, 2, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 2, nil)
	f.wal(1, 7)
	_, err := Run(context.Background(), f.deps(&pinDuring{ObjectStore: f.r.Store, f: f, id: "20261201T000000F"}), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if !errors.Is(err, ErrPinnedDuringRun) {
		t.Errorf("run: %v", err)
	}
	if f.gone("20261201T000000F") || !f.gone("20261202T000000F") {
		t.Error("want the newer backup deleted and the pinned one kept")
	}
	f.consistent()
}

// TestRunChildRecordGoesWithChild: expiring a young incremental removes
// its record as a child, so a later run may expire its parent at once.
func TestRunChildRecordGoesWithChild(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 1, nil)
	f.backup("20261202T000000I", TypeIncr, "20261201T000000F", 48*time.Hour, 4, 4, 1, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 1, nil)
	f.put(backup.ChildKey(cluster, "20261201T000000F", "20261202T000000I"))
	f.wal(1, 7)
	// Keep the full for now (count 2), expire the incremental.
	spec := Spec{Types: map[string]Rule{TypeFull: {Count: 2}, TypeIncr: {Count: 1}}}
	f.backup("20261203T010000I", TypeIncr, "20261203T000000F", 23*time.Hour, 6, 6, 1, nil)
	if _, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: spec}); err != nil || !f.gone("20261202T000000I") {
		t.Fatalf("first run: %v", err)
	}
	if f.exists(backup.ChildKey(cluster, "20261201T000000F", "20261202T000000I")) {
		t.Error("the expired incremental's child record is left")
	}
	if _, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)}); err != nil || !f.gone("20261201T000000F") {
		t.Fatalf("second run: %v", err)
	}
	f.consistent()
}
