package expire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

const cluster = "main"

// fixture is a repository holding synthetic backups (manifests and data
// objects) and WAL objects; the data is never read by expiry.
type fixture struct {
	t      *testing.T
	r      repo.Repo
	signer *objstream.Signer
	data   map[string][]string // backup ID -> its data object keys
	ms     map[string]*backup.Manifest
}

func newFixture(t *testing.T, signed bool) *fixture {
	st, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, r: repo.Repo{Name: "local", Store: st}, data: map[string][]string{}, ms: map[string]*backup.Manifest{}}
	if signed {
		path := filepath.Join(t.TempDir(), "signing.key")
		pub, err := objstream.GenerateSigningKey(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.signer, err = objstream.LoadSigner(path); err != nil {
			t.Fatal(err)
		}
		if f.r.Verifier, err = objstream.NewVerifier([]objstream.PublicKey{pub}, false); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) put(key string) {
	f.t.Helper()
	if err := f.r.Store.Put(context.Background(), key, strings.NewReader(key), int64(len(key))); err != nil {
		f.t.Fatal(err)
	}
}

// backup writes a backup of nfiles data objects, started ago before now,
// in segments startSeg..stopSeg of timeline 1; signer nil leaves it unsigned.
func (f *fixture) backup(id, typ, parent string, ago time.Duration, startSeg, stopSeg uint64, nfiles int, signer *objstream.Signer) {
	f.t.Helper()
	start := time.Now().Add(-ago).UTC()
	m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: typ, Parent: parent, Cluster: cluster, StartTime: start, StopTime: start.Add(time.Minute),
		StartLSN: wal.LSN(startSeg*seg + 40), StopLSN: wal.LSN(stopSeg*seg + 100), Timeline: 1, SegmentSize: seg}
	for i := range nfiles {
		key := fmt.Sprintf("%s%s/pgdata/base/1/%d", backup.Prefix(cluster), id, 1000+i)
		f.put(key)
		f.data[id] = append(f.data[id], key)
	}
	if err := backup.SaveManifest(context.Background(), f.r, m, signer); err != nil {
		f.t.Fatal(err)
	}
	f.ms[id] = m
}

func (f *fixture) wal(from, to uint64) {
	for s := from; s <= to; s++ {
		n := wal.SegmentName(1, s, seg)
		f.put(repo.WALKey(cluster, n))
	}
}

func (f *fixture) exists(key string) bool {
	_, err := f.r.Store.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

// consistent checks that every backup whose manifest is present has all
// its data, its chain and its WAL: no backup looks complete but is not.
func (f *fixture) consistent() {
	f.t.Helper()
	for id, m := range f.ms {
		if !f.exists(backup.ManifestKey(cluster, id)) {
			continue
		}
		for _, k := range f.data[id] {
			if !f.exists(k) {
				f.t.Errorf("backup %s's manifest is there but its object %s is gone", id, k)
			}
		}
		if m.Parent != "" && !f.exists(backup.ManifestKey(cluster, m.Parent)) {
			f.t.Errorf("backup %s's parent %s is gone", id, m.Parent)
		}
		for _, s := range wal.SegmentsBetween(1, m.StartLSN, m.StopLSN, seg) {
			if !f.exists(repo.WALKey(cluster, s)) {
				f.t.Errorf("backup %s needs WAL %s, gone", id, s)
			}
		}
	}
}

func (f *fixture) gone(id string) bool {
	f.t.Helper()
	if f.exists(backup.ManifestKey(cluster, id)) {
		return false
	}
	for _, k := range f.data[id] {
		if f.exists(k) {
			return false
		}
	}
	return true
}

func (f *fixture) deps(st storage.ObjectStore) Deps {
	r := f.r
	if st != nil {
		r.Store = st
	}
	return Deps{Cluster: cluster, Repos: []repo.Repo{r}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// failingStore fails every Delete after the first n.
type failingStore struct {
	storage.ObjectStore
	n       int64
	deletes atomic.Int64
}

func (s *failingStore) Delete(ctx context.Context, key string) error {
	if s.deletes.Add(1) > s.n {
		return fmt.Errorf("injected failure deleting %s", key)
	}
	return s.ObjectStore.Delete(ctx, key)
}

func TestRunDryRunAndReal(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 3, 5, nil)
	f.backup("20261202T000000I", TypeIncr, "20261201T000000F", 48*time.Hour, 5, 5, 3, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 8, 8, 5, nil)
	f.wal(1, 10)
	ctx := context.Background()
	o := Options{TrustUnsigned: true, Spec: fullRule(1), DryRun: true}
	res, err := Run(ctx, f.deps(nil), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(res[0].Plan.Delete); !slices.Equal(got, []string{"20261201T000000F", "20261202T000000I"}) {
		t.Fatalf("dry run would delete %v", got)
	}
	if len(res[0].Plan.WALDeleteNames) != 7 || res[0].Objects != 0 {
		t.Fatalf("dry run: WAL %v, objects deleted %d", res[0].Plan.WALDeleteNames, res[0].Objects)
	}
	if f.gone("20261201T000000F") || !f.exists(repo.WALKey(cluster, wal.SegmentName(1, 1, seg))) {
		t.Fatal("the dry run deleted something")
	}
	o.DryRun = false
	res, err = Run(ctx, f.deps(nil), o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].Deleted, []string{"20261202T000000I", "20261201T000000F"}) || res[0].WALDeleted != 7 {
		t.Fatalf("deleted %v (want the child first), WAL %d", res[0].Deleted, res[0].WALDeleted)
	}
	if !f.gone("20261201T000000F") || !f.gone("20261202T000000I") || f.gone("20261203T000000F") {
		t.Fatal("wrong backups deleted")
	}
	for s := uint64(1); s <= 10; s++ {
		if got, want := f.exists(repo.WALKey(cluster, wal.SegmentName(1, s, seg))), s >= 8; got != want {
			t.Errorf("WAL segment %d present %v, want %v", s, got, want)
		}
	}
	f.consistent()
}

func ids(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// TestRunInterrupted fails deletes after n of them, for every n up to a
// whole run, and checks that the repository stays consistent and that the
// next run (past the grace period) leaves exactly what a clean run leaves.
func TestRunInterrupted(t *testing.T) {
	for n := int64(0); n < 16; n++ { // a whole run deletes 16 objects
		t.Run(fmt.Sprint("after ", n, " deletes"), func(t *testing.T) {
			f := newFixture(t, false)
			f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 3, 4, nil)
			f.backup("20261202T000000D", TypeDiff, "20261201T000000F", 48*time.Hour, 5, 5, 3, nil)
			f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 8, 8, 4, nil)
			f.wal(1, 9)
			fs := &failingStore{ObjectStore: f.r.Store, n: n}
			_, err := Run(context.Background(), f.deps(fs), Options{TrustUnsigned: true, Spec: fullRule(1), Parallel: 3})
			if err == nil {
				t.Fatalf("run with deletes failing after %d did not fail", n)
			}
			f.consistent()
			// Within the grace period the leftovers stay (they could be a
			// backup being written).
			res, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
			if err != nil {
				t.Fatal(err)
			}
			f.consistent()
			later := func() time.Time { return time.Now().Add(DefaultGrace + time.Hour) }
			res, err = Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1), Now: later})
			if err != nil {
				t.Fatal(err)
			}
			f.consistent()
			if !f.gone("20261201T000000F") || !f.gone("20261202T000000D") || f.gone("20261203T000000F") {
				t.Fatalf("after the second run: %+v", res)
			}
			for s := uint64(1); s <= 9; s++ {
				if got, want := f.exists(repo.WALKey(cluster, wal.SegmentName(1, s, seg))), s >= 8; got != want {
					t.Errorf("WAL segment %d present %v, want %v", s, got, want)
				}
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 3, 50, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 8, 8, 4, nil)
	f.wal(1, 9)
	ctx, cancel := context.WithCancel(context.Background())
	cs := &cancelStore{ObjectStore: f.r.Store, after: 5, cancel: cancel}
	if _, err := Run(ctx, f.deps(cs), Options{TrustUnsigned: true, Spec: fullRule(1), Parallel: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	f.consistent()
	if f.exists(backup.ManifestKey(cluster, "20261201T000000F")) {
		t.Fatal("the manifest was not deleted first")
	}
	later := func() time.Time { return time.Now().Add(DefaultGrace + time.Hour) }
	res, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1), Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].Leftovers, []string{"20261201T000000F"}) || !f.gone("20261201T000000F") {
		t.Fatalf("leftovers %v", res[0].Leftovers)
	}
	f.consistent()
}

type cancelStore struct {
	storage.ObjectStore
	after  int64
	n      atomic.Int64
	cancel func()
}

func (s *cancelStore) Delete(ctx context.Context, key string) error {
	if s.n.Add(1) == s.after {
		s.cancel()
	}
	return s.ObjectStore.Delete(ctx, key)
}

// TestRunSparesBackupInProgress: objects without a manifest that are fresh,
// or whose ID has a fresh reservation, are a backup being written.
func TestRunSparesBackupInProgress(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 8, 8, 2, nil)
	running := backup.Prefix(cluster) + "20261204T000000F/pgdata/base/1/1"
	f.put(running)
	f.put(backup.Prefix(cluster) + "20261204T000000" + backup.ReservedSuffix + "/abcd")
	res, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0].Leftovers) != 0 || !f.exists(running) {
		t.Fatalf("a fresh backup in progress was taken for a leftover: %v", res[0].Leftovers)
	}
	// Old objects but a fresh reservation (a long backup): still spared.
	old := func() time.Time { return time.Now().Add(2 * DefaultGrace) }
	res, err = Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1), Now: old})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].Leftovers, []string{"20261204T000000.reserved", "20261204T000000F"}) || f.exists(running) {
		t.Fatalf("stale leftovers: %v", res[0].Leftovers)
	}
}

// TestRunUntrustedAndPins: with signing configured, forged (unsigned)
// manifests do not push a signed backup out of its rule and are not
// deleted; a pin, even unsigned, keeps its backup.
func TestRunUntrustedAndPins(t *testing.T) {
	f := newFixture(t, true)
	f.backup("20261201T000000F", TypeFull, "", 96*time.Hour, 2, 2, 2, f.signer)
	f.backup("20261202T000000F", TypeFull, "", 72*time.Hour, 4, 4, 2, f.signer)
	f.backup("20261203T000000F", TypeFull, "", 48*time.Hour, 6, 6, 2, f.signer)
	f.backup("20261205T000000F", TypeFull, "", 1*time.Hour, 9, 9, 2, nil)      // forged
	f.backup("20261206T000000F", TypeFull, "", 30*time.Minute, 10, 10, 2, nil) // forged
	f.wal(1, 10)
	ctx := context.Background()
	if _, err := SetPin(ctx, []repo.Repo{f.r}, f.signer, cluster, "n1", "20261201T000000F", "audit", time.Now()); err != nil {
		t.Fatal(err)
	}
	// A forged, unsigned pin: it can only keep more.
	f.put(PinKey(cluster, "20261202T000000F"))
	if _, err := SetPin(ctx, []repo.Repo{f.r}, f.signer, cluster, "n1", "20261231T000000F", "x", time.Now()); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("pinning a missing backup: %v", err)
	}
	res, err := Run(ctx, f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0].Plan.Delete) != 0 {
		t.Fatalf("deleted %v", res[0].Plan.Delete)
	}
	// Segments 3 and 5 are between kept backups (pinned: start to stop only).
	if got := res[0].Plan.WALDeleteNames; !slices.Equal(got, []string{wal.SegmentName(1, 1, seg), wal.SegmentName(1, 3, seg), wal.SegmentName(1, 5, seg)}) {
		t.Fatalf("WAL deleted %v", got)
	}
	if err := Unpin(ctx, []repo.Repo{f.r}, cluster, "20261201T000000F"); err != nil {
		t.Fatal(err)
	}
	res, err = Run(ctx, f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(res[0].Plan.Delete); !slices.Equal(got, []string{"20261201T000000F"}) {
		t.Fatalf("after unpin deleted %v", got)
	}
	f.consistent()
}

// TestRunRefusesUnreadableManifest: what depends on a backup whose
// manifest cannot be read is unknown, so nothing is expired.
func TestRunRefusesUnreadableManifest(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 2, nil)
	f.put(backup.ManifestKey(cluster, "20261202T000000I"))
	_, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err == nil || !strings.Contains(err.Error(), "20261202T000000I's manifest cannot be read") {
		t.Fatalf("error %v", err)
	}
	if f.gone("20261201T000000F") {
		t.Fatal("deleted despite an unreadable manifest")
	}
}

// startsBackup puts a reservation and a start record, as a backup starting
// now does, when the first manifest is deleted.
type startsBackup struct {
	storage.ObjectStore
	done atomic.Bool
}

func (s *startsBackup) Delete(ctx context.Context, key string) error {
	if strings.HasSuffix(key, "/backup.manifest") && !s.done.Swap(true) {
		stamp := time.Now().UTC().Format("20060102T150405")
		for _, k := range []string{backup.Prefix(cluster) + stamp + backup.ReservedSuffix + "/feed", backup.StartedKey(cluster, stamp)} {
			if err := s.ObjectStore.Put(ctx, k, strings.NewReader("x"), 1); err != nil {
				return err
			}
		}
	}
	return s.ObjectStore.Delete(ctx, key)
}

// TestRunBackupStartsDuringRun: a backup that starts while backups are
// being deleted claims its parent before it is recorded (ClaimParent), so
// the backups go on being deleted; but it may need WAL the plan did not
// count on, so no WAL goes; the repository stays consistent.
func TestRunBackupStartsDuringRun(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 2, 2, nil)
	f.backup("20261202T000000I", TypeIncr, "20261201T000000F", 48*time.Hour, 4, 4, 2, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 6, 6, 2, nil)
	f.wal(1, 7)
	res, err := Run(context.Background(), f.deps(&startsBackup{ObjectStore: f.r.Store}), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatalf("run during a backup's start: %v", err)
	}
	if !f.gone("20261202T000000I") || !f.gone("20261201T000000F") {
		t.Fatal("want both old backups deleted")
	}
	if !f.exists(repo.WALKey(cluster, wal.SegmentName(1, 1, seg))) || res[0].WALSkipped == "" {
		t.Fatalf("WAL deleted although a backup started during the run (skipped %q)", res[0].WALSkipped)
	}
	f.consistent()
	// With the reservation fresh, the next run expires no WAL either.
	res, err = Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil || res[0].WALDeleted != 0 {
		t.Fatalf("run during a backup: %v, %+v", err, res)
	}
	f.consistent()
}
