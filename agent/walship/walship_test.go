package walship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

const (
	sysid   = 7300000000000000042
	segSize = 1 << 20
)

type fixture struct {
	pgdata, pgwal, repo, identity string
	cfg                           *config.Config
	sh                            *Shipper
}

func newFixture(t *testing.T, extra string) *fixture {
	t.Helper()
	f := &fixture{pgdata: testutil.FakePGData(t, sysid), repo: t.TempDir()}
	f.pgwal = filepath.Join(f.pgdata, "pg_wal")
	f.identity = filepath.Join(t.TempDir(), "id.txt")
	rcpt, err := objstream.GenerateIdentity(f.identity)
	if err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: r1, url: 'file://%s'}]\nencryption: {recipients: [%s], identity_file: %s}\nwal: {push_concurrency: 3, prefetch: 3}\n%s",
		f.pgdata, f.repo, rcpt, f.identity, extra)
	f.cfg, err = config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	f.sh, err = New(context.Background(), f.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// segment writes segment segNo of timeline 1 into pg_wal, marked ready.
func (f *fixture) segment(t *testing.T, segNo uint64) (string, []byte) {
	t.Helper()
	name := wal.SegmentName(1, segNo, segSize)
	data := testutil.FakeSegment(sysid, 1, segNo, segSize)
	if err := os.WriteFile(filepath.Join(f.pgwal, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.pgwal, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return name, data
}

func (f *fixture) stored(name string) bool {
	_, err := os.Stat(filepath.Join(f.repo, "c1", "wal", name[:8], name))
	return err == nil
}

func TestPushAheadRemembersAndShortCircuits(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	var names []string
	for i := uint64(1); i <= 5; i++ {
		n, _ := f.segment(t, i)
		names = append(names, n)
	}
	// Pushing the first also pushes the next two ready ones (concurrency 3).
	if err := f.sh.Push(ctx, filepath.Join(f.pgwal, names[0])); err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		if want := i < 3; f.stored(n) != want {
			t.Errorf("%s stored = %v, want %v", n, f.stored(n), want)
		}
	}
	if _, err := os.Stat(filepath.Join(f.pgwal, MarkerDir, names[1])); err != nil {
		t.Fatalf("%s pushed ahead but not remembered: %v", names[1], err)
	}
	// The remembered file returns at once, even if the repository lost it
	// (proving no second upload happens), and its marker is consumed.
	os.Remove(filepath.Join(f.repo, "c1", "wal", names[1][:8], names[1]))
	if err := f.sh.Push(ctx, filepath.Join(f.pgwal, names[1])); err != nil {
		t.Fatal(err)
	}
	if f.stored(names[1]) {
		t.Fatal("a remembered file was uploaded again")
	}
	if _, err := os.Stat(filepath.Join(f.pgwal, MarkerDir, names[1])); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the marker was not consumed")
	}
	// PushAhead (the daemon's timer) takes the rest.
	f.sh.PushAhead(ctx, f.pgwal, 4)
	for _, n := range names[3:] {
		if !f.stored(n) {
			t.Errorf("%s not pushed ahead", n)
		}
	}
}

func TestPushConflictAndIdempotence(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name, data := f.segment(t, 7)
	path := filepath.Join(f.pgwal, name)
	if err := f.sh.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(f.repo, "c1", "wal", name[:8], name))
	if err := f.sh.Push(ctx, path); err != nil {
		t.Fatalf("identical re-push: %v", err)
	}
	data[1000] ^= 1
	os.WriteFile(path, data, 0o600)
	err := f.sh.Push(ctx, path)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("different content: %v, want ErrConflict", err)
	}
	after, _ := os.ReadFile(filepath.Join(f.repo, "c1", "wal", name[:8], name))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused push changed the stored object")
	}
}

func TestPushRejectsBadFiles(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	cases := map[string][]byte{
		"000000010000000000000003":         testutil.FakeSegment(sysid+1, 1, 3, segSize), // other cluster
		"000000010000000000000004":         testutil.FakeSegment(sysid, 1, 5, segSize),   // wrong name
		"000000010000000000000006":         testutil.FakeSegment(sysid, 1, 6, segSize)[:segSize/2],
		"000000010000000000000008.partial": testutil.FakeSegment(sysid, 1, 8, segSize),
		"not-a-wal-file":                   []byte("x"),
	}
	for name, data := range cases {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, data, 0o600)
		err := f.sh.Push(ctx, p)
		if name == "000000010000000000000008.partial" {
			// A .partial segment is checked like a segment and accepted.
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	// History and backup-history files are text: pushed and fetched as is.
	for _, name := range []string{"00000002.history", "000000010000000000000002.00000028.backup"} {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, []byte("1\t0/3000000\tno recovery target specified\n"), 0o600)
		if err := f.sh.Push(ctx, p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dest := filepath.Join(t.TempDir(), "out")
		if err := f.sh.Fetch(ctx, name, dest); err != nil {
			t.Fatalf("fetch %s: %v", name, err)
		}
	}
}

func TestFetchAndPrefetch(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	orig := map[string][]byte{}
	for i := uint64(1); i <= 5; i++ {
		n, d := f.segment(t, i)
		orig[n] = d
		if err := f.sh.push(ctx, filepath.Join(f.pgwal, n)); err != nil {
			t.Fatal(err)
		}
	}
	// A recovering server's pg_wal.
	rec := filepath.Join(testutil.FakePGData(t, sysid), "pg_wal")
	dest := filepath.Join(rec, "RECOVERYXLOG")
	first := wal.SegmentName(1, 1, segSize)
	if err := f.sh.Fetch(ctx, first, dest); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dest)
	if !bytes.Equal(got, orig[first]) {
		t.Fatal("fetched bytes differ")
	}
	pgwal, ok := f.sh.PrefetchPlan(first, dest)
	if !ok || pgwal != rec {
		t.Fatalf("PrefetchPlan = %q, %v", pgwal, ok)
	}
	if err := f.sh.Prefetch(ctx, pgwal, first, segSize); err != nil {
		t.Fatal(err)
	}
	for i := uint64(2); i <= 4; i++ { // prefetch: 3
		n := wal.SegmentName(1, i, segSize)
		b, err := os.ReadFile(filepath.Join(rec, PrefetchDir, n))
		if err != nil || !bytes.Equal(b, orig[n]) {
			t.Fatalf("prefetched %s: %v", n, err)
		}
	}
	// The next fetch is served from the prefetch directory, even with the
	// repository gone.
	os.RemoveAll(f.repo)
	second := wal.SegmentName(1, 2, segSize)
	if err := f.sh.Fetch(ctx, second, dest); err != nil {
		t.Fatalf("fetch from prefetch: %v", err)
	}
	got, _ = os.ReadFile(dest)
	if !bytes.Equal(got, orig[second]) {
		t.Fatal("prefetched bytes differ")
	}
	// With the repository gone and nothing prefetched: not "not in the
	// archive" (that would end recovery early) but an error naming the
	// repository that does not hold the cluster.
	err := f.sh.Fetch(ctx, wal.SegmentName(1, 9, segSize), dest)
	if err == nil || errors.Is(err, ErrNotInArchive) || !errors.Is(err, repo.ErrNoClusterInfo) {
		t.Fatalf("missing, with the repository gone: %v", err)
	}
	// A manual fetch outside pg_wal plans no prefetch.
	if _, ok := f.sh.PrefetchPlan(first, filepath.Join(t.TempDir(), "x")); ok {
		t.Fatal("prefetch planned outside a WAL directory")
	}
}

func TestFetchFallsBackToAGoodCopy(t *testing.T) {
	f := newFixture(t, "")
	second := t.TempDir()
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: r1, url: 'file://%s'}, {name: r2, url: 'file://%s'}]\nencryption: {identity_file: %s}\n",
		f.pgdata, f.repo, second, f.identity)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name, data := f.segment(t, 3)
	if err := sh.push(ctx, filepath.Join(f.pgwal, name)); err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(f.repo, "c1", "wal", name[:8], name)
	b, _ := os.ReadFile(obj)
	b[len(b)-10] ^= 1
	os.WriteFile(obj, b, 0o600)
	dest := filepath.Join(t.TempDir(), "out")
	if err := sh.Fetch(ctx, name, dest); err != nil {
		t.Fatalf("fetch with one bad copy: %v", err)
	}
	got, _ := os.ReadFile(dest)
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	// Both copies bad: a fatal error naming the object, not "not found".
	obj2 := filepath.Join(second, "c1", "wal", name[:8], name)
	os.WriteFile(obj2, b, 0o600)
	err = sh.Fetch(ctx, name, dest)
	if err == nil || errors.Is(err, ErrNotInArchive) {
		t.Fatalf("both copies bad: %v", err)
	}
}

func TestListAndVerifyReportGaps(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	for _, i := range []uint64{1, 2, 3, 6, 7} {
		n, _ := f.segment(t, i)
		if err := f.sh.push(ctx, filepath.Join(f.pgwal, n)); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := f.sh.Lister().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tl := ls[0].Timelines[0]
	if tl.Segments != 5 || tl.SegmentSize != segSize || len(tl.Gaps) != 1 || tl.Gaps[0].Count != 2 ||
		tl.Gaps[0].From != wal.SegmentName(1, 4, segSize) || tl.Gaps[0].To != wal.SegmentName(1, 5, segSize) {
		t.Fatalf("listing %+v", tl)
	}
	res, err := f.sh.Lister().Verify(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].OK() || res[0].Verified != 5 || len(res[0].Failed) != 0 {
		t.Fatalf("verify with a gap: %+v", res[0])
	}
}

// TestFetchDiscardsABadPrefetchedFile: a prefetched file that is short (an
// OS crash after the rename of a file whose data never reached the disk)
// or holds another segment is not handed to PostgreSQL; the segment comes
// from the repository instead and the bad file is removed.
func TestFetchDiscardsABadPrefetchedFile(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	orig := map[string][]byte{}
	for i := uint64(1); i <= 4; i++ {
		n, d := f.segment(t, i)
		orig[n] = d
		if err := f.sh.push(ctx, filepath.Join(f.pgwal, n)); err != nil {
			t.Fatal(err)
		}
	}
	rec := filepath.Join(testutil.FakePGData(t, sysid), "pg_wal")
	dest := filepath.Join(rec, "RECOVERYXLOG")
	if err := os.MkdirAll(filepath.Join(rec, PrefetchDir), 0o700); err != nil {
		t.Fatal(err)
	}
	seg2, seg3, seg4 := wal.SegmentName(1, 2, segSize), wal.SegmentName(1, 3, segSize), wal.SegmentName(1, 4, segSize)
	bad := map[string][]byte{
		seg2: orig[seg2][:segSize/2], // truncated
		seg3: orig[seg4],             // another segment under this name
		seg4: make([]byte, segSize),  // zeros: no segment header at all
	}
	for name, b := range bad {
		if err := os.WriteFile(filepath.Join(rec, PrefetchDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{seg2, seg3, seg4} {
		if err := f.sh.Fetch(ctx, name, dest); err != nil {
			t.Fatalf("fetch %s with a bad prefetched copy: %v", name, err)
		}
		got, _ := os.ReadFile(dest)
		if !bytes.Equal(got, orig[name]) {
			t.Fatalf("%s: served %d bytes that are not the archived segment (the bad prefetched file was used)", name, len(got))
		}
		if _, err := os.Stat(filepath.Join(rec, PrefetchDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the bad prefetched file was left behind: %v", name, err)
		}
	}
	// A good prefetched file is still served, without the repository.
	if err := f.sh.Prefetch(ctx, rec, wal.SegmentName(1, 1, segSize), segSize); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(f.repo)
	if err := f.sh.Fetch(ctx, seg2, dest); err != nil {
		t.Fatalf("fetch from a good prefetched file: %v", err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, orig[seg2]) {
		t.Fatal("a good prefetched file served wrong bytes")
	}
}

// syncRecorder wraps a store and records the keys it is asked to Sync.
type syncRecorder struct {
	storage.ObjectStore
	mu     sync.Mutex
	synced []string
	err    error
}

func (s *syncRecorder) Sync(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = append(s.synced, key)
	return s.err
}

// TestIdenticalRePushSyncsTheObject: an earlier put may have renamed the
// object into place and died before the directory fsync; a retry that
// finds identical content must make it durable before reporting success
// (PostgreSQL then recycles the segment).
func TestIdenticalRePushSyncsTheObject(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name, _ := f.segment(t, 5)
	path := filepath.Join(f.pgwal, name)
	if err := f.sh.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	rec := &syncRecorder{ObjectStore: f.sh.repos[0].Store}
	f.sh.repos[0].Store = rec
	if err := f.sh.Push(ctx, path); err != nil {
		t.Fatalf("identical re-push: %v", err)
	}
	key := repo.WALKey("c1", name)
	if len(rec.synced) != 1 || rec.synced[0] != key {
		t.Fatalf("identical re-push synced %v, want [%s]", rec.synced, key)
	}
	// A sync that fails is a failed push: the segment must not be recycled.
	rec.err = errors.New("injected fsync failure")
	if err := f.sh.Push(ctx, path); err == nil || !strings.Contains(err.Error(), "injected fsync failure") || !strings.Contains(err.Error(), name) {
		t.Fatalf("identical re-push with a failing sync: %v, want the error naming %s", err, name)
	}
}

// TestPushRefusesAFileNotMarkedReady: a file in pg_wal that PostgreSQL has
// not marked ready for archiving (the segment still being written, pushed
// by hand) is refused unless forced; archive_command's files always have
// their .ready, and an archived one its .done.
func TestPushRefusesAFileNotMarkedReady(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name := wal.SegmentName(1, 9, segSize)
	path := filepath.Join(f.pgwal, name)
	if err := os.WriteFile(path, testutil.FakeSegment(sysid, 1, 9, segSize), 0o600); err != nil {
		t.Fatal(err)
	}
	err := f.sh.Push(ctx, path)
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), name+".ready") {
		t.Fatalf("push of a file not marked ready: %v, want ErrNotReady naming %s and its .ready file", err, name)
	}
	if f.stored(name) {
		t.Fatal("a file not marked ready was stored")
	}
	if err := f.sh.PushWith(ctx, path, PushOptions{Force: true}); err != nil {
		t.Fatalf("forced push: %v", err)
	}
	if !f.stored(name) {
		t.Fatal("a forced push stored nothing")
	}
	// Already archived (.done): an identical re-push succeeds.
	done := wal.SegmentName(1, 10, segSize)
	os.WriteFile(filepath.Join(f.pgwal, done), testutil.FakeSegment(sysid, 1, 10, segSize), 0o600)
	os.WriteFile(filepath.Join(f.pgwal, "archive_status", done+".done"), nil, 0o600)
	if err := f.sh.Push(ctx, filepath.Join(f.pgwal, done)); err != nil {
		t.Fatalf("push of a file marked done: %v", err)
	}
}

// TestRepairReplacesAnIncompleteStoredCopy: a segment pushed by hand while
// PostgreSQL was still writing it conflicts with the finished segment
// forever; Inspect shows both versions and Repair replaces the stored one,
// keeping it aside, after which archiving goes on.
func TestRepairReplacesAnIncompleteStoredCopy(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name := wal.SegmentName(1, 12, segSize)
	path := filepath.Join(f.pgwal, name)
	full := testutil.FakeSegment(sysid, 1, 12, segSize)
	partial := bytes.Clone(full)
	clear(partial[segSize/2:]) // the rest not yet written
	os.WriteFile(path, partial, 0o600)
	if err := f.sh.PushWith(ctx, path, PushOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	objPath := filepath.Join(f.repo, "c1", "wal", name[:8], name)
	stored, _ := os.ReadFile(objPath)
	os.WriteFile(path, full, 0o600)
	os.WriteFile(filepath.Join(f.pgwal, "archive_status", name+".ready"), nil, 0o600)
	if err := f.sh.Push(ctx, path); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "wal-repair") {
		t.Fatalf("archive_command after the hand push: %v, want ErrConflict pointing at wal-repair", err)
	}

	c, err := f.sh.Repairer().Inspect(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Local.Size != segSize || c.Local.SHA256 != sha256hex(full) || c.Local.Ready != "ready" || c.Local.Problem != "" {
		t.Fatalf("local version %+v", c.Local)
	}
	if len(c.Stored) != 1 || !c.Stored[0].Present || c.Stored[0].Same || c.Stored[0].SHA256 != sha256hex(partial) ||
		c.Stored[0].Size != segSize || c.Stored[0].Stored.IsZero() || c.Stored[0].StoredBytes != int64(len(stored)) {
		t.Fatalf("stored versions %+v", c.Stored)
	}
	if got := c.Conflicting(); len(got) != 1 || got[0] != "r1" {
		t.Fatalf("Conflicting() = %v", got)
	}
	if after, _ := os.ReadFile(objPath); !bytes.Equal(after, stored) {
		t.Fatal("Inspect changed the stored object")
	}

	res, err := f.sh.Repairer().Repair(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Repo != "r1" || !strings.HasPrefix(res[0].KeptAs, "c1/wal-replaced/"+name+".") {
		t.Fatalf("Repair = %+v", res)
	}
	kept, err := os.ReadFile(filepath.Join(f.repo, filepath.FromSlash(res[0].KeptAs)))
	if err != nil || !bytes.Equal(kept, stored) {
		t.Fatalf("the replaced object was not kept as %s: %v", res[0].KeptAs, err)
	}
	if err := f.sh.Push(ctx, path); err != nil {
		t.Fatalf("archive_command after the repair: %v", err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if err := f.sh.Fetch(ctx, name, dest); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, full) {
		t.Fatal("after the repair the archive does not hold the finished segment")
	}
	// Nothing left to repair.
	if c, err := f.sh.Repairer().Inspect(ctx, path); err != nil || len(c.Conflicting()) != 0 {
		t.Fatalf("after the repair: %+v, %v", c, err)
	}
	if res, err := f.sh.Repairer().Repair(ctx, path, false); err != nil || len(res) != 0 {
		t.Fatalf("second repair: %+v, %v", res, err)
	}
}

// TestRepairRefusesABadLocalFile: the local file replaces the stored copy
// only when it is a complete segment of this cluster that PostgreSQL marked
// ready (or --force for the last); otherwise nothing changes.
func TestRepairRefusesABadLocalFile(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name, full := f.segment(t, 14)
	path := filepath.Join(f.pgwal, name)
	other := bytes.Clone(full)
	other[segSize-1] ^= 1
	os.WriteFile(path, other, 0o600)
	if err := f.sh.Push(ctx, path); err != nil {
		t.Fatal(err)
	}
	objPath := filepath.Join(f.repo, "c1", "wal", name[:8], name)
	stored, _ := os.ReadFile(objPath)
	for _, c := range []struct {
		what, says string
		prep       func()
	}{
		{"short", "is 524288 bytes", func() { os.WriteFile(path, full[:segSize/2], 0o600) }},
		{"another segment", "its name says", func() { os.WriteFile(path, testutil.FakeSegment(sysid, 1, 15, segSize), 0o600) }},
		{"not ready", "not marked it ready", func() {
			os.WriteFile(path, full, 0o600)
			os.Remove(filepath.Join(f.pgwal, "archive_status", name+".ready"))
		}},
	} {
		c.prep()
		if _, err := f.sh.Repairer().Repair(ctx, path, false); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Fatalf("%s local file: repair returned %v, want an error saying %q", c.what, err, c.says)
		}
		what := c.what
		if after, _ := os.ReadFile(objPath); !bytes.Equal(after, stored) {
			t.Fatalf("%s local file: the stored object changed", what)
		}
	}
	if _, err := f.sh.Repairer().Repair(ctx, path, true); err != nil { // not ready, forced
		t.Fatalf("forced repair: %v", err)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestListFlagsForks: wal-list reads the history files, shows where each
// timeline branched off, and flags a fork: the parent going on after the
// branch point, or two timelines branching off one.
func TestListFlagsForks(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	push := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(f.pgwal, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.pgwal, "archive_status", name+".ready"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := f.sh.push(ctx, filepath.Join(f.pgwal, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []uint64{1, 2, 3} {
		n, data := f.segment(t, i)
		push(n, data)
	}
	list := func() map[uint32]Timeline {
		t.Helper()
		ls, err := f.sh.Lister().List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls[0].Errors) != 0 {
			t.Fatalf("listing errors: %v", ls[0].Errors)
		}
		out := map[uint32]Timeline{}
		for _, tl := range ls[0].Timelines {
			out[tl.Timeline] = tl
		}
		return out
	}
	// Timeline 2 begins where timeline 1's archive ends: a failover.
	push("00000002.history", []byte("1\t0/400000\tno recovery target specified\n"))
	if tl := list()[2]; tl.Parent != 1 || tl.SwitchLSN != "0/400000" || tl.Fork != "" {
		t.Fatalf("after a failover: %+v", tl)
	}
	// Timeline 1 goes on.
	n, data := f.segment(t, 4)
	push(n, data)
	if tl := list()[2]; !strings.Contains(tl.Fork, "timeline 1 goes on after 0/400000") || !strings.Contains(tl.Fork, n+" is archived") {
		t.Fatalf("timeline 1 going on after timeline 2 branched off: %+v", tl)
	}
	// A second branch off timeline 1.
	push("00000003.history", []byte("1\t0/500000\tno recovery target specified\n"))
	tls := list()
	if !strings.Contains(tls[2].Fork, "timeline 3 also branches off timeline 1") || !strings.Contains(tls[3].Fork, "timeline 2 also branches off timeline 1") {
		t.Fatalf("two branches off timeline 1: %+v, %+v", tls[2], tls[3])
	}
}
