package restore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

// fakeWAL writes PostgreSQL 15 WAL (1 MiB segments, 8 kB pages) for
// one timeline: page headers, records spanning pages and segments,
// prev-links and CRCs. pkg/wal's tests check the reader against a real
// server; these check what restore does with what it reads.
type fakeWAL struct {
	tli       uint32
	segs      map[uint64][]byte
	pos, prev uint64
}

const (
	fakeSegSize  = 1 << 20
	fakePageSize = 8192
)

func newFakeWAL() *fakeWAL {
	return &fakeWAL{tli: 1, segs: map[uint64][]byte{}, pos: fakeSegSize} // segment 1
}

// fork starts a new timeline at the insert position, with a copy of the
// WAL before it (as PostgreSQL copies the last segment at promotion).
func (w *fakeWAL) fork(tli uint32) *fakeWAL {
	c := &fakeWAL{tli: tli, segs: map[uint64][]byte{}, pos: w.pos, prev: w.prev}
	for k, v := range w.segs {
		c.segs[k] = bytes.Clone(v)
	}
	return c
}

func (w *fakeWAL) at(pos uint64) []byte {
	s := pos / fakeSegSize
	if w.segs[s] == nil {
		w.segs[s] = make([]byte, fakeSegSize)
	}
	return w.segs[s][pos%fakeSegSize:]
}

func (w *fakeWAL) pageHeader(pos uint64, info uint16, rem uint32) uint64 {
	b, le, size := w.at(pos), binary.LittleEndian, uint64(24)
	if pos%fakeSegSize == 0 {
		info |= 0x0002
		size = 40
		le.PutUint64(b[24:], 42)
		le.PutUint32(b[32:], fakeSegSize)
		le.PutUint32(b[36:], fakePageSize)
	}
	le.PutUint16(b[0:], wal.XLogPageMagic)
	le.PutUint16(b[2:], info)
	le.PutUint32(b[4:], w.tli)
	le.PutUint64(b[8:], pos)
	le.PutUint32(b[16:], rem)
	return size
}

// add writes a record with main data d and returns where it begins and
// ends.
func (w *fakeWAL) add(rmid, info uint8, d []byte) (wal.LSN, wal.LSN) {
	p := []byte{255, byte(len(d))}
	if len(d) >= 256 {
		p = binary.LittleEndian.AppendUint32([]byte{254}, uint32(len(d)))
	}
	rec := append(make([]byte, 24, 24+len(p)+len(d)), append(p, d...)...)
	le := binary.LittleEndian
	le.PutUint32(rec[0:], uint32(len(rec)))
	le.PutUint64(rec[8:], w.prev)
	rec[16], rec[17] = info, rmid
	tab := crc32.MakeTable(crc32.Castagnoli)
	le.PutUint32(rec[20:], crc32.Update(crc32.Update(0, tab, rec[24:]), tab, rec[:20]))
	if w.pos%fakePageSize == 0 {
		w.pos += w.pageHeader(w.pos, 0, 0)
	}
	start := w.pos
	for rest := rec; ; {
		n := min(uint64(len(rest)), fakePageSize-w.pos%fakePageSize)
		copy(w.at(w.pos), rest[:n])
		rest, w.pos = rest[n:], w.pos+n
		if len(rest) == 0 {
			break
		}
		w.pos += w.pageHeader(w.pos, 0x0001, uint32(len(rest)))
	}
	w.pos = (w.pos + 7) &^ 7
	w.prev = start
	return wal.LSN(start), wal.LSN(w.pos)
}

func (w *fakeWAL) fill(n int) {
	for range n {
		w.add(21, 0, make([]byte, 100<<10))
	}
}

func (w *fakeWAL) restorePoint(name string) *RestorePoint {
	d := make([]byte, 72)
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC).Add(time.Duration(w.pos) * time.Microsecond)
	binary.LittleEndian.PutUint64(d, uint64(at.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
	copy(d[8:], name)
	lsn, end := w.add(0, 0x70, d)
	return &RestorePoint{Name: name, LSN: lsn, EndLSN: end, Time: at, Timeline: w.tli}
}

// testArchive is a file repository holding archived WAL, encrypted and
// compressed as wal-push stores it.
type testArchive struct {
	t     *testing.T
	dir   string
	repo  repo.Repo
	id    *age.X25519Identity
	store *filestore.Store
}

func newTestArchive(t *testing.T, name string, id *age.X25519Identity) *testArchive {
	dir := t.TempDir()
	st, err := filestore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testArchive{t: t, dir: dir, repo: repo.Repo{Name: name, Store: st}, id: id, store: st}
}

func (a *testArchive) put(name string, data []byte) {
	var buf bytes.Buffer
	w, err := objstream.NewWriter(&buf, objstream.Options{Recipients: []age.Recipient{a.id.Recipient()}, PlainSize: int64(len(data))})
	if err == nil {
		_, err = w.Write(data)
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = a.store.Put(context.Background(), repo.WALKey("main", name), bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	}
	if err != nil {
		a.t.Fatal(err)
	}
}

// upload archives every segment w holds from segment first on.
func (a *testArchive) upload(w *fakeWAL, first uint64) {
	for s, b := range w.segs {
		if s >= first {
			a.put(wal.SegmentName(w.tli, s, fakeSegSize), b)
		}
	}
}

func (a *testArchive) path(name string) string {
	return filepath.Join(a.dir, filepath.FromSlash(repo.WALKey("main", name)))
}

func testDeps(t *testing.T, id *age.X25519Identity, archives ...*testArchive) Deps {
	var repos []repo.Repo
	for _, a := range archives {
		repos = append(repos, a.repo)
	}
	return Deps{Cfg: &config.Config{Cluster: "main"}, Repos: repos, Identities: []age.Identity{id},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func testBackup(id string, tli uint32, start, stop wal.LSN) *backup.Manifest {
	return &backup.Manifest{ID: id, Timeline: tli, StartLSN: start, StopLSN: stop, SegmentSize: fakeSegSize}
}

// TestFindRestorePoint: the backup chosen for a name target and the
// restore point found, on one timeline, with names inside backups and
// names used twice.
func TestFindRestorePoint(t *testing.T) {
	ctx := context.Background()
	id, _ := age.GenerateX25519Identity()
	w := newFakeWAL()
	w.fill(3)
	b1start, _ := w.add(1, 0, []byte("b1 start"))
	w.fill(2)
	early := w.restorePoint("early") // inside backup 1
	twice1 := w.restorePoint("twice")
	_, b1stop := w.add(0, 0, []byte("b1 end"))
	a1 := w.restorePoint("a")
	twice2 := w.restorePoint("twice") // after backup 1's end, but it stops at the first
	w.fill(15)                        // into segment 3
	b2start, _ := w.add(1, 0, []byte("b2 start"))
	inB2 := w.restorePoint("in-b2")
	w.fill(4)
	_, b2stop := w.add(0, 0, []byte("b2 end"))
	bb := w.restorePoint("b")
	w.fill(12) // b's second occurrence is in another segment
	a2 := w.restorePoint("a")
	w.fill(1)
	if wal.LSN(w.pos)/fakeSegSize < 4 {
		t.Fatalf("the WAL ends at %X, want at least 4 segments", w.pos)
	}
	arch := newTestArchive(t, "local", id)
	arch.upload(w, 1)
	d := testDeps(t, id, arch)
	B1 := testBackup("20261126T080000F", 1, b1start, b1stop)
	B2 := testBackup("20261126T090000F", 1, b2start, b2stop)
	both := []*backup.Manifest{B1, B2}

	for _, tc := range []struct {
		name     string
		backups  []*backup.Manifest
		explicit bool
		want     *backup.Manifest
		rp       *RestorePoint
		err      []string
	}{
		{name: "a", backups: both, want: B1, rp: a1},
		{name: "b", backups: both, want: B2, rp: bb},
		{name: "in-b2", backups: both, want: B1, rp: inB2}, // from B1, in-b2 is after its end
		{name: "early", backups: both, err: []string{`no backup can recover to restore point "early"`, "at " + early.LSN.String(), "before the end of backup " + B1.ID}},
		{name: "twice", backups: both, err: []string{"at " + twice1.LSN.String(), "before the end of backup " + B1.ID}},
		{name: "twice", backups: []*backup.Manifest{B1}, explicit: true, err: []string{"at " + twice1.LSN.String(), "before the end of backup " + B1.ID}},
		{name: "nope", backups: both, err: []string{`no restore point named "nope"`, "oldest backup " + B1.ID, "archived WAL ends at"}},
		{name: "a", backups: []*backup.Manifest{B2}, explicit: true, want: B2, rp: a2}, // the second "a"
		{name: "b", backups: []*backup.Manifest{B1}, explicit: true, want: B1, rp: bb},
		{name: "in-b2", backups: []*backup.Manifest{B2}, explicit: true, err: []string{`restore point "in-b2"`, "before the end of backup " + B2.ID, "choose an earlier backup"}},
		{name: "early", backups: []*backup.Manifest{B1}, explicit: true, err: []string{"before the end of backup " + B1.ID}},
		{name: "nope", backups: []*backup.Manifest{B2}, explicit: true, err: []string{`no restore point named "nope"`, "backup " + B2.ID}},
		{name: strings.Repeat("x", 64), backups: both, err: []string{"at most 63 bytes"}},
	} {
		m, rp, err := findRestorePoint(ctx, d, tc.backups, tc.name, "", tc.explicit)
		what := fmt.Sprintf("%q from %d backups (explicit %v)", tc.name, len(tc.backups), tc.explicit)
		if tc.err != nil {
			if err == nil {
				t.Errorf("%s: found %+v in %s, want an error", what, rp, m.ID)
				continue
			}
			for _, s := range tc.err {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s: error %q does not say %q", what, err, s)
				}
			}
			if strings.Contains(err.Error(), twice2.LSN.String()) {
				t.Errorf("%s: error %q names the second \"twice\", which no backup stops at", what, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		if m != tc.want || *rp != *tc.rp {
			t.Errorf("%s: backup %s, %+v; want %s, %+v", what, m.ID, *rp, tc.want.ID, *tc.rp)
		}
	}

	// A damaged copy in the first repository is replaced by the second's,
	// as wal-fetch does; damaged everywhere, it is an error, not "no such
	// restore point".
	arch2 := newTestArchive(t, "second", id)
	arch2.upload(w, 1)
	seg := wal.SegmentName(1, uint64(bb.LSN)/fakeSegSize, fakeSegSize)
	damage(t, arch.path(seg))
	if _, rp, err := findRestorePoint(ctx, testDeps(t, id, arch, arch2), both, "b", "", false); err != nil || *rp != *bb {
		t.Fatalf("with a damaged copy in the first repository: %+v, %v", rp, err)
	}
	if _, _, err := findRestorePoint(ctx, d, both, "b", "", false); err == nil || !strings.Contains(err.Error(), seg) || strings.Contains(err.Error(), "no restore point") {
		t.Fatalf("with the only copy damaged: %v", err)
	}
	// A missing segment ends the archive there.
	if err := os.Remove(arch2.path(seg)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := findRestorePoint(ctx, testDeps(t, id, arch2), both, "b", "", false); err == nil || !strings.Contains(err.Error(), seg+" is not in the archive") {
		t.Fatalf("with a segment missing: %v", err)
	}
}

// damage flips a byte in the middle of a stored object.
func damage(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFindRestorePointTimelines: the search follows the chosen timeline's
// history, reading each segment from the timeline that had begun by then,
// and ignores restore points on the abandoned branch; with the old
// timeline going on after the switch (a fork) it needs the timeline named.
func TestFindRestorePointTimelines(t *testing.T) {
	ctx := context.Background()
	id, _ := age.GenerateX25519Identity()
	w1 := newFakeWAL()
	bstart, _ := w1.add(1, 0, []byte("start"))
	_, bstop := w1.add(0, 0, []byte("end"))
	before := w1.restorePoint("before-switch")
	w1.fill(25) // into segment 3
	w2 := w1.fork(2)
	switchAt := wal.LSN(w1.pos)
	// The old timeline goes on (an old primary that was not stopped).
	ghost1 := w1.restorePoint("ghost")
	w1.fill(12)
	w1.restorePoint("ghost")
	w1.restorePoint("real")
	oldStart, _ := w1.add(1, 0, []byte("a backup of the old primary"))
	w1.fill(1)
	// The new timeline.
	w2.add(0, 0x90, []byte("end of recovery"))
	w2.fill(12)
	real := w2.restorePoint("real")
	w2.fill(1)
	if uint64(ghost1.LSN)/fakeSegSize != uint64(switchAt)/fakeSegSize || uint64(real.LSN)/fakeSegSize <= uint64(switchAt)/fakeSegSize {
		t.Fatalf("switch at %s, ghost at %s, real at %s: want the ghost in the switch's segment and real after it", switchAt, ghost1.LSN, real.LSN)
	}
	arch := newTestArchive(t, "local", id)
	arch.upload(w1, 1)
	arch.upload(w2, uint64(switchAt)/fakeSegSize)
	d := testDeps(t, id, arch)
	B := testBackup("20261126T080000F", 1, bstart, bstop)

	// Without the history file, recovery would stay on timeline 1 and
	// stop short: refused (TestMissingHistoryFile), unless asked for.
	if _, _, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "ghost", "", true); err == nil || !strings.Contains(err.Error(), "00000002.history is not in the archive") {
		t.Fatalf("ghost without a history file: %v, want a refusal naming 00000002.history", err)
	}
	if _, rp, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "ghost", "current", true); err != nil || *rp != *ghost1 {
		t.Fatalf("ghost without a history file, --target-timeline current: %+v, %v", rp, err)
	}
	arch.put("00000002.history", fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", switchAt))
	// Timeline 1 went on after timeline 2 branched off: a fork.
	if _, _, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "real", "", true); err == nil || !strings.Contains(err.Error(), "--target-timeline") {
		t.Fatalf("real with the archive forked and no timeline named: %v", err)
	}
	if _, rp, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "real", "2", true); err != nil || *rp != *real || rp.Timeline != 2 {
		t.Fatalf("real: %+v, %v; want %+v", rp, err, real)
	}
	if _, rp, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "before-switch", "latest", true); err != nil || *rp != *before {
		t.Fatalf("before-switch: %+v, %v", rp, err)
	}
	if _, _, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "ghost", "2", true); err == nil || !strings.Contains(err.Error(), "no restore point named") {
		t.Fatalf("ghost on the abandoned timeline 1 was found: %v", err)
	}
	if _, rp, err := findRestorePoint(ctx, d, []*backup.Manifest{B}, "ghost", "current", true); err != nil || *rp != *ghost1 {
		t.Fatalf("ghost along timeline 1 (current): %+v, %v", rp, err)
	}
	// A backup of the old primary after the switch cannot follow
	// timeline 2; among several backups it is left out.
	old := testBackup("20261126T100000F", 1, oldStart, oldStart+100)
	if _, _, err := findRestorePoint(ctx, d, []*backup.Manifest{old}, "real", "2", true); err == nil || !strings.Contains(err.Error(), "does not branch") {
		t.Fatalf("a backup on the abandoned branch: %v", err)
	}
	if m, rp, err := findRestorePoint(ctx, d, []*backup.Manifest{B, old}, "real", "2", false); err != nil || m != B || *rp != *real {
		t.Fatalf("picking among a good backup and one on the abandoned branch: %v, %+v, %v", m, rp, err)
	}
}

func TestParseHistory(t *testing.T) {
	h, err := parseHistory([]byte("# comment\n1\t0/3000158\tno recovery target specified\n\n  2\t0/5000000\tat restore point \"x\"\n"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if h.String() != "1 -> 0/3000158 -> 2 -> 0/5000000 -> 3" {
		t.Fatalf("history %s", h)
	}
	for segNo, want := range map[uint64]uint32{0: 1, 2: 1, 3: 2, 4: 2, 5: 3, 9: 3} {
		if got := h.timelineOf(segNo, 16<<20); got != want {
			t.Errorf("segment %d is read from timeline %d, want %d", segNo, got, want)
		}
	}
	for _, bad := range []string{"x\t0/1\n", "1\n", "1\t0/5\n1\t0/6\n", "3\t0/1\n", "1\t0/5\n2\t0/4\n"} {
		if _, err := parseHistory([]byte(bad), 3); err == nil {
			t.Errorf("parseHistory(%q) accepted", bad)
		}
	}
}

// TestPrefetcher: segments come in order and whole, read ahead or
// streamed, and a missing one is the end of the archive.
func TestPrefetcher(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	w := newFakeWAL()
	w.fill(40)
	arch := newTestArchive(t, "local", id)
	arch.upload(w, 1)
	last := w.pos / fakeSegSize
	a := &walArchive{cluster: "main", repos: []repo.Repo{arch.repo}, ids: []age.Identity{id}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	name := func(segNo uint64) string { return wal.SegmentName(1, segNo, fakeSegSize) }
	for _, depth := range []int{0, 1, 3} {
		p := newPrefetcher(context.Background(), a, fakeSegSize, name)
		p.depth = depth
		for segNo := uint64(1); segNo <= last+1; segNo++ {
			rc, err := p.get(context.Background(), segNo)
			if segNo > last {
				if !errors.Is(err, wal.ErrNoSegment) {
					t.Fatalf("depth %d: segment %d after the archive's end: %v", depth, segNo, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("depth %d: segment %d: %v", depth, segNo, err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(b, w.segs[segNo]) {
				t.Fatalf("depth %d: segment %d: %d bytes (%v), want the %d archived", depth, segNo, len(b), err, len(w.segs[segNo]))
			}
		}
		p.close()
	}
}
