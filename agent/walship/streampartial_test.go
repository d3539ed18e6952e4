package walship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

func TestPartialRefusal(t *testing.T) {
	cases := []struct {
		name string
		tli  uint32
		v    TimelineView
		says string // "" = usable
	}{
		{"#1 timeline 1, no history anywhere", 1, TimelineView{Archived: []uint32{1}}, ""},
		{"#2 timeline 2 with its history, the newest", 2, TimelineView{Histories: []uint32{2}, Archived: []uint32{1, 2}}, ""},
		{"#3 timeline 1 after a promotion to 2", 1, TimelineView{Histories: []uint32{2}, Archived: []uint32{1, 2}}, "timeline 1 is not the newest"},
		{"#4 timeline 2 after a second promotion to 3", 2, TimelineView{Histories: []uint32{2, 3}, Archived: []uint32{1, 2, 3}}, "history file of timeline 3"},
		{"#5 timeline 3 without its history file", 3, TimelineView{Histories: []uint32{2}, Archived: []uint32{1, 2, 3}}, "timeline 3 has no history file"},
		{"#6 a later timeline archived WAL without its history", 1, TimelineView{Archived: []uint32{1, 2}}, "archive holds WAL of timeline 2"},
		{"#7 the receiver is already on a later timeline", 1, TimelineView{Archived: []uint32{1}, Streamed: []uint32{1, 2}}, "receiver holds WAL of timeline 2"},
		{"#8 empty archive, timeline 1", 1, TimelineView{}, ""},
		{"#9 history of 2 not yet archived, its partial is", 2, TimelineView{Archived: []uint32{1}, Streamed: []uint32{2}}, "timeline 2 has no history file"},
	}
	for _, c := range cases {
		got := PartialRefusal(c.tli, c.v)
		if c.says == "" && got != "" || c.says != "" && !strings.Contains(got, c.says) {
			t.Errorf("%s: PartialRefusal = %q, want %q", c.name, got, c.says)
		}
	}
	if got := NewestTimeline(nil); got != 1 {
		t.Errorf("NewestTimeline(none) = %d, want 1", got)
	}
	if got := NewestTimeline([]uint32{3, 2, 7}); got != 7 {
		t.Errorf("NewestTimeline = %d, want 7", got)
	}
}

func TestPadded(t *testing.T) {
	data := []byte("abcdef")
	got, err := Padded(data, 16)
	if err != nil || len(got) != 16 || !bytes.Equal(got[:6], data) || !bytes.Equal(got[6:], make([]byte, 10)) {
		t.Fatalf("Padded = %q, %v", got, err)
	}
	for _, c := range []struct {
		n    int
		size int64
	}{{16, 16}, {17, 16}, {3, 12}, {3, 0}, {3, 2 << 30}} {
		if _, err := Padded(make([]byte, c.n), c.size); err == nil {
			t.Errorf("Padded(%d bytes, %d) accepted", c.n, c.size)
		}
	}
}

// pushHistory archives the history file of timeline tli (branching off
// tli-1 at switchAt).
func (f *fixture) pushHistory(t *testing.T, tli uint32, switchAt wal.LSN) {
	t.Helper()
	name := wal.HistoryFileName(tli)
	body := fmt.Sprintf("%d\t%s\tno recovery target specified\n", tli-1, switchAt)
	if err := os.WriteFile(filepath.Join(f.pgwal, name), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.pgwal, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.sh.Push(context.Background(), filepath.Join(f.pgwal, name)); err != nil {
		t.Fatal(err)
	}
}

// TestFetchWithPartial: a segment not in the archive is served from its
// stream partial, padded with zeros, only with FetchWithPartial, only on
// the newest timeline, and recorded for the restore's report; a damaged
// or misplaced partial is an error, never "not in the archive"; the
// prefetcher never takes a partial for a segment.
func TestFetchWithPartial(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	for i := uint64(1); i <= 3; i++ {
		n, _ := f.segment(t, i)
		if err := f.sh.push(ctx, filepath.Join(f.pgwal, n)); err != nil {
			t.Fatal(err)
		}
	}
	const n = 12345
	name := wal.SegmentName(1, 4, segSize)
	full := testutil.FakeSegment(sysid, 1, 4, segSize)
	if err := f.sh.PushPartial(ctx, name, full[:n]); err != nil {
		t.Fatal(err)
	}
	recData := testutil.FakePGData(t, sysid)
	dest := filepath.Join(recData, "pg_wal", "RECOVERYXLOG")

	// The prefetcher stops at the end of the archive.
	if err := f.sh.Prefetch(ctx, filepath.Join(recData, "pg_wal"), wal.SegmentName(1, 2, segSize), segSize); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(recData, "pg_wal", PrefetchDir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the prefetcher stored the partial segment %s: %v", name, err)
	}
	if err := f.sh.Fetch(ctx, name, dest); !errors.Is(err, ErrNotInArchive) {
		t.Fatalf("Fetch without partials: %v, want ErrNotInArchive", err)
	}
	u, err := f.sh.FetchWithPartial(ctx, name, dest)
	if err != nil || u == nil {
		t.Fatalf("FetchWithPartial: %v, %v", u, err)
	}
	got, _ := os.ReadFile(dest)
	if len(got) != segSize || !bytes.Equal(got[:n], full[:n]) || !bytes.Equal(got[n:], make([]byte, segSize-n)) {
		t.Fatalf("served %d bytes: not the partial's %d padded with zeros to %d", len(got), n, segSize)
	}
	from := wal.LSN(4 * segSize)
	if u.Bytes != n || u.FromLSN != from || u.ToLSN != from+n || u.Timeline != 1 || u.Segment != name || u.Repo != "r1" {
		t.Fatalf("reported %+v", u)
	}
	rec, err := ReadPartialRecord(recData)
	if err != nil || rec == nil || rec.Bytes != n || rec.ToLSN != from+n {
		t.Fatalf("record in the data directory: %+v, %v", rec, err)
	}
	// A segment with neither: not in the archive.
	if _, err := f.sh.FetchWithPartial(ctx, wal.SegmentName(1, 5, segSize), dest); !errors.Is(err, ErrNotInArchive) {
		t.Fatalf("no segment, no partial: %v, want ErrNotInArchive", err)
	}
	// Once archived, the segment itself is served.
	f.segment(t, 4)
	if err := f.sh.push(ctx, filepath.Join(f.pgwal, name)); err != nil {
		t.Fatal(err)
	}
	if u, err := f.sh.FetchWithPartial(ctx, name, dest); err != nil || u != nil {
		t.Fatalf("archived segment: %v, %v; want it served from the archive", u, err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, full) {
		t.Fatal("the archived segment was not served whole")
	}

	// Damaged, misplaced: an error, not "not in the archive".
	name5 := wal.SegmentName(1, 5, segSize)
	obj5 := filepath.Join(f.repo, filepath.FromSlash(repo.StreamPartialKey("c1", name5)))
	if err := f.sh.PushPartial(ctx, name5, testutil.FakeSegment(sysid, 1, 5, segSize)[:9000]); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(obj5)
	damaged := bytes.Clone(b)
	damaged[len(damaged)-40] ^= 1
	os.WriteFile(obj5, damaged, 0o600)
	if _, err := f.sh.FetchWithPartial(ctx, name5, dest); err == nil || errors.Is(err, ErrNotInArchive) {
		t.Fatalf("damaged partial: %v, want an error other than ErrNotInArchive", err)
	}
	name6 := wal.SegmentName(1, 6, segSize)
	obj6 := filepath.Join(f.repo, filepath.FromSlash(repo.StreamPartialKey("c1", name6)))
	os.MkdirAll(filepath.Dir(obj6), 0o700)
	os.WriteFile(obj6, b, 0o600) // segment 5's partial under segment 6's key
	if _, err := f.sh.FetchWithPartial(ctx, name6, dest); err == nil || errors.Is(err, ErrNotInArchive) {
		t.Fatalf("another segment's partial under this name: %v, want an error other than ErrNotInArchive", err)
	}
	os.Remove(obj5)
	os.Remove(obj6)

	// Timeline 2 branches off: timeline 1's partials are never served,
	// timeline 2's are.
	old := wal.SegmentName(1, 7, segSize)
	if err := f.sh.PushPartial(ctx, old, testutil.FakeSegment(sysid, 1, 7, segSize)[:9000]); err != nil {
		t.Fatal(err)
	}
	os.Remove(PartialRecordPath(recData))
	f.pushHistory(t, 2, wal.LSN(5*segSize))
	if u, err := f.sh.FetchWithPartial(ctx, old, dest); !errors.Is(err, ErrNotInArchive) || u != nil {
		t.Fatalf("partial of the old timeline 1 after timeline 2's history: %v, %v; want ErrNotInArchive", u, err)
	}
	if rec, _ := ReadPartialRecord(recData); rec != nil {
		t.Fatalf("refused partial recorded: %+v", rec)
	}
	cur := wal.SegmentName(2, 7, segSize)
	if err := f.sh.PushPartial(ctx, cur, testutil.FakeSegment(sysid, 2, 7, segSize)[:9000]); err != nil {
		t.Fatal(err)
	}
	if u, err := f.sh.FetchWithPartial(ctx, cur, dest); err != nil || u == nil || u.Timeline != 2 {
		t.Fatalf("partial of the newest timeline 2: %+v, %v", u, err)
	}
}

// TestFetchWithPartialSigned: with signing required, a partial signed by
// a key the reader does not trust is refused as an error (exit >= 126 in
// wal-fetch), never served and never "not in the archive".
func TestFetchWithPartialSigned(t *testing.T) {
	ctx := context.Background()
	key, pub := signingKey(t)
	other, _ := signingKey(t)
	f := newFixture(t, fmt.Sprintf("signing: {key_file: %s}\n", key))
	n, _ := f.segment(t, 3) // the repository holds the cluster
	if err := f.sh.push(ctx, filepath.Join(f.pgwal, n)); err != nil {
		t.Fatal(err)
	}
	// The forger can write the repository, and holds a key of its own.
	fcfg := *f.cfg
	fcfg.Signing.KeyFile = other
	forger, err := New(ctx, &fcfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	name := wal.SegmentName(1, 4, segSize)
	if err := forger.PushPartial(ctx, name, testutil.FakeSegment(sysid, 1, 4, segSize)[:9000]); err != nil {
		t.Fatal(err)
	}
	rd := f.reader(t, fmt.Sprintf("signing: {public_keys: [%q]}\n", pub))
	dest := filepath.Join(t.TempDir(), "x")
	if err := rd.Fetch(ctx, n, dest); err != nil {
		t.Fatalf("the reader cannot fetch the signed archive: %v", err)
	}
	if u, err := rd.FetchWithPartial(ctx, name, dest); err == nil || errors.Is(err, ErrNotInArchive) || u != nil {
		t.Fatalf("partial signed by an untrusted key: %v, %v; want an error other than ErrNotInArchive", u, err)
	} else {
		t.Logf("refused: %v", err)
	}
	if b, _ := os.ReadFile(dest); len(b) != segSize || bytes.Equal(b[:9000], testutil.FakeSegment(sysid, 1, 4, segSize)[:9000]) {
		t.Fatal("a forged partial was written to the destination")
	}
	// Signed by the trusted key, it is served.
	if err := f.sh.PushPartial(ctx, name, testutil.FakeSegment(sysid, 1, 4, segSize)[:9000]); err != nil {
		t.Fatal(err)
	}
	if u, err := rd.FetchWithPartial(ctx, name, dest); err != nil || u == nil {
		t.Fatalf("partial signed by the trusted key: %v, %v", u, err)
	}
}

// TestListAndVerifyShowStreamPartials: wal-list and wal-verify show the
// receiver's partial as a stream partial with its WAL bytes, not as a
// segment or a gap; wal-verify reads it back and fails a damaged one.
func TestListAndVerifyShowStreamPartials(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	for i := uint64(1); i <= 3; i++ {
		n, _ := f.segment(t, i)
		if err := f.sh.push(ctx, filepath.Join(f.pgwal, n)); err != nil {
			t.Fatal(err)
		}
	}
	name := wal.SegmentName(1, 4, segSize)
	if err := f.sh.PushPartial(ctx, name, testutil.FakeSegment(sysid, 1, 4, segSize)[:10000]); err != nil {
		t.Fatal(err)
	}
	ls, err := f.sh.Lister().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tl := ls[0].Timelines[0]
	if tl.Segments != 3 || len(tl.Gaps) != 0 || tl.Last != wal.SegmentName(1, 3, segSize) {
		t.Fatalf("the partial changed the archive's listing: %+v", tl)
	}
	if sp := ls[0].StreamPartials; len(sp) != 1 || sp[0].Segment != name || sp[0].Bytes != 10000 || sp[0].Timeline != 1 || sp[0].StoredBytes == 0 {
		t.Fatalf("stream partials listed: %+v", sp)
	}
	res, err := f.sh.Lister().Verify(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].OK() || len(res[0].StreamPartials) != 1 {
		t.Fatalf("verify with a good partial: %+v", res[0])
	}
	obj := filepath.Join(f.repo, filepath.FromSlash(repo.StreamPartialKey("c1", name)))
	b, _ := os.ReadFile(obj)
	b[len(b)-40] ^= 1
	os.WriteFile(obj, b, 0o600)
	res, err = f.sh.Lister().Verify(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].OK() || len(res[0].Failed) != 1 || !strings.Contains(res[0].Failed[0].Key, "wal-stream") {
		t.Fatalf("verify with a damaged partial: %+v", res[0])
	}
}
