package expire

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// A bucket (directory) writer makes <cluster>/expiry/deleting a symlink to
// a host directory: a signed, deleting run removes the host's files.
func TestRunSymlinkInRepositoryNotFollowed(t *testing.T) {
	f := newFixture(t, true)
	f.backup("20261204T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, f.signer)
	f.wal(1, 4)
	victim := t.TempDir()
	if err := os.WriteFile(filepath.Join(victim, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(victim, "sub"), 0o700)
	os.WriteFile(filepath.Join(victim, "sub", "deep"), []byte("x"), 0o600)
	root := f.r.Store.(*filestore.Store).Root()
	if err := os.MkdirAll(filepath.Join(root, cluster, "expiry"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(root, cluster, "expiry", "deleting")); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), f.deps(f.r.Store), Options{Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}})
	if !errors.Is(err, filestore.ErrSymlink) || !strings.Contains(err.Error(), filepath.Join(root, cluster, "expiry", "deleting")) {
		t.Errorf("run through a planted link: err %v, want ErrSymlink naming the link", err)
	}
	for _, p := range []string{"precious", "sub/deep"} {
		if _, err := os.Stat(filepath.Join(victim, p)); err != nil {
			t.Errorf("host file %s outside the repository: %v", p, err)
		}
	}
}

// Two expire runs: run 2 lists while a backup's reservation is fresh, so its
// plan deletes nothing and it removes every deleting marker, including run
// 1's live one; the backup then claims run 1's victim.
func TestRunKeepsAnotherRunsLiveMarker(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261205T000000F", TypeFull, "", 48*time.Hour, 2, 2, 2, nil)
	f.backup("20261206T000000I", TypeIncr, "20261205T000000F", 24*time.Hour, 4, 4, 1, nil)
	f.wal(1, 6)
	ctx := context.Background()
	// run 1 has marked P and listed its children (none).
	P := "20261206T000000I"
	f.put(backup.DeletingKey(cluster, P))
	// a backup reserves (fresh); run 2 starts and lists.
	stamp := time.Now().UTC().Format("20060102T150405")
	f.put(backup.Prefix(cluster) + stamp + backup.ReservedSuffix + "/n")
	_, err := Run(ctx, f.deps(f.r.Store), Options{TrustUnsigned: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}})
	if err != nil {
		t.Fatalf("run 2: %v", err)
	}
	if !f.exists(backup.DeletingKey(cluster, P)) {
		t.Errorf("run 2 removed run 1's fresh marker of %s", P)
	}
	// the backup claims P: passes, though run 1 is about to delete P's manifest.
	if err := backup.ClaimParent(ctx, []repo.Repo{f.r}, cluster, P, stamp+"I"); !errors.Is(err, backup.ErrParentExpiring) {
		t.Errorf("claim on %s succeeded after run 2 removed run 1's live marker: run 1 now deletes the parent of a recorded backup", P)
	}
}

// A legacy unsigned full (require: false, kept "until it expires") and a
// newer signed full: the legacy backup is never deleted, and its own
// start..stop WAL is kept with it (a range wider than maxUntrustedWAL is
// not believed and keeps none).
func TestUntrustedBackupKeepsItsOwnWAL(t *testing.T) {
	l := bk("20261201T000000F", TypeFull, "", now.Add(-144*time.Hour), 1, 2, 3)
	l.Untrusted = "not signed by a trusted key"
	n := bk("20261206T000000F", TypeFull, "", now.Add(-24*time.Hour), 1, 8, 9)
	w := segs(1, 1, 10)
	p, err := Decide(Input{Backups: []Backup{l, n}, WAL: w, Now: now, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Delete) != 0 {
		t.Errorf("deleted %v", p.Delete)
	}
	if want := cat(segs(1, 1, 1), segs(1, 4, 7)); !slices.Equal(p.WALDeleteNames, want) {
		t.Errorf("WAL deleted %v, want %v (the untrusted backup's 2..3 kept)", p.WALDeleteNames, want)
	}
	// Implausibly wide: keeps no WAL (nor does any list of its segments
	// get built).
	l.StopLSN = l.StartLSN + maxUntrustedWAL + 1
	p, err = Decide(Input{Backups: []Backup{l, n}, WAL: w, Now: now, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := segs(1, 1, 7); !slices.Equal(p.WALDeleteNames, want) {
		t.Errorf("WAL deleted with an implausible untrusted range %v, want %v", p.WALDeleteNames, want)
	}
}

// A forged unsigned incr naming a real backup as parent keeps it (forging
// only ever keeps more), and keeps its own (plausible) range of WAL.
func TestForgedChildKeepsParent(t *testing.T) {
	f1 := bk("20261201T000000F", TypeFull, "", now.Add(-144*time.Hour), 1, 2, 3)
	f2 := bk("20261206T000000F", TypeFull, "", now.Add(-24*time.Hour), 1, 8, 9)
	x := untrusted(bk("20261206T100000I", TypeIncr, "20261201T000000F", now.Add(-20*time.Hour), 1, 9, 9))
	p, err := Decide(Input{Backups: []Backup{f1, f2, x}, WAL: segs(1, 1, 10), Now: now, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Delete) != 0 {
		t.Errorf("deleted %v: the forged child's parent must stay", p.Delete)
	}
	if want := cat(segs(1, 1, 1), segs(1, 4, 7)); !slices.Equal(p.WALDeleteNames, want) {
		t.Errorf("WAL deleted %v, want %v", p.WALDeleteNames, want)
	}
}

// Only markers older than backup.StaleMarkerAge go, and only keys of the
// shapes expiry writes (deleting/<ID>, started/<stamp>) are ever deleted.
func TestRunDeletesOnlyOldMarkersOfExpectedShape(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261205T000000F", TypeFull, "", 48*time.Hour, 2, 2, 2, nil)
	f.wal(1, 3)
	root := f.r.Store.(*filestore.Store).Root()
	old := time.Now().Add(-backup.StaleMarkerAge - time.Minute)
	older := time.Now().Add(-72 * time.Hour)
	age := func(key string, at time.Time) {
		t.Helper()
		f.put(key)
		if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(key)), at, at); err != nil {
			t.Fatal(err)
		}
	}
	staleMark := backup.DeletingKey(cluster, "20261101T000000F")
	freshMark := backup.DeletingKey(cluster, "20261102T000000F")
	oddMark := backup.DeletingPrefix(cluster) + "not-a-backup"
	oddStarted := backup.StartedPrefix(cluster) + "junk"
	oldStarted := backup.StartedKey(cluster, "20261101T000000")
	age(staleMark, old)
	f.put(freshMark)
	age(oddMark, older)
	age(oddStarted, older)
	age(oldStarted, older)
	if _, err := Run(context.Background(), f.deps(nil), Options{DryRun: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if !f.exists(staleMark) {
		t.Error("a dry run removed a stale marker")
	}
	if _, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{staleMark: false, freshMark: true, oddMark: true, oddStarted: true, oldStarted: false} {
		if got := f.exists(key); got != want {
			t.Errorf("%s exists %v, want %v", key, got, want)
		}
	}
}

// A repository that fails does not stop the others: the run goes on and
// returns the errors joined.
func TestRunGoesOnAfterARepositoryFails(t *testing.T) {
	bad := newFixture(t, false)
	bad.r.Name = "bad"
	bad.put(backup.ManifestKey(cluster, "20261201T000000F")) // not a manifest
	good := newFixture(t, false)
	good.backup("20261201T000000F", TypeFull, "", 96*time.Hour, 2, 2, 1, nil)
	good.backup("20261205T000000F", TypeFull, "", 48*time.Hour, 4, 4, 1, nil)
	good.wal(1, 5)
	d := good.deps(nil)
	d.Repos = append([]repo.Repo{bad.r}, d.Repos...)
	res, err := Run(context.Background(), d, Options{TrustUnsigned: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}})
	if err == nil || !strings.Contains(err.Error(), "repository bad") {
		t.Errorf("run: %v, want repository bad's error", err)
	}
	if !good.gone("20261201T000000F") {
		t.Errorf("the second repository was not expired after the first failed (results %d)", len(res))
	}
}

// A run that held its deleting marker for more than StaleMarkerAge/2
// before deleting the manifest (another run may take the marker for stale
// past StaleMarkerAge) stops before deleting that backup.
func TestRunAbandonsDeleteWhenMarkerTooOld(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 96*time.Hour, 2, 2, 1, nil)
	f.backup("20261205T000000F", TypeFull, "", 48*time.Hour, 4, 4, 1, nil)
	f.wal(1, 5)
	o := Options{TrustUnsigned: true, Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}}}
	o.since = func(time.Time) time.Duration { return backup.StaleMarkerAge/2 + time.Second }
	_, err := Run(context.Background(), f.deps(nil), o)
	if !errors.Is(err, ErrMarkerTooOld) {
		t.Fatalf("run: %v, want ErrMarkerTooOld", err)
	}
	if !f.exists(backup.ManifestKey(cluster, "20261201T000000F")) {
		t.Error("the backup was deleted although its marker was too old")
	}
	if f.exists(backup.DeletingKey(cluster, "20261201T000000F")) {
		t.Error("the abandoned marker was left behind")
	}
	f.consistent()
}
