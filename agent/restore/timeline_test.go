package restore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/wal"
)

// choose runs chooseTimeline over what arch holds.
func choose(t *testing.T, d Deps, m *backup.Manifest, want string, limit wal.LSN) (uint32, error) {
	t.Helper()
	a := &walArchive{cluster: d.Cfg.Cluster, repos: d.Repos, ids: d.Identities, log: d.Log}
	g, err := loadTimelines(context.Background(), a, fakeSegSize)
	if err != nil {
		t.Fatal(err)
	}
	return chooseTimeline(context.Background(), g, a, m, want, limit)
}

// TestChooseTimeline: a failover (the old timeline ends where the new one
// begins) is followed without a flag; a fork (the old timeline goes on,
// in the segment holding the switch or later ones, or two timelines branch
// off one) is refused unless --target-timeline names one, and a timeline
// named must descend from the backup.
func TestChooseTimeline(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	w1 := newFakeWAL()
	bstart, _ := w1.add(1, 0, []byte("start"))
	_, bstop := w1.add(0, 0, []byte("end"))
	w1.fill(15) // into segment 2
	switchAt := wal.LSN(w1.pos)
	w2 := w1.fork(2)
	w2.add(0, 0x90, []byte("end of recovery"))
	w2.fill(12)
	arch := newTestArchive(t, "local", id)
	// Timeline 1's segments, the one holding the switch included (as
	// written up to the switch, then zeros).
	arch.upload(w1, 1)
	arch.upload(w2, uint64(switchAt)/fakeSegSize)
	arch.put("00000002.history", fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", switchAt))
	d := testDeps(t, id, arch)
	B := testBackup("20261126T080000F", 1, bstart, bstop)

	for _, tc := range []struct {
		want string
		tli  uint32
	}{{"", 2}, {"latest", 2}, {"current", 1}, {"1", 1}, {"2", 2}} {
		if got, err := choose(t, d, B, tc.want, 0); err != nil || got != tc.tli {
			t.Fatalf("after a failover, --target-timeline %q: timeline %d, %v; want %d", tc.want, got, err, tc.tli)
		}
	}
	for want, msg := range map[string]string{"3": "no history file", "x": "want a timeline number", "0": "want a timeline number"} {
		if _, err := choose(t, d, B, want, 0); err == nil || !strings.Contains(err.Error(), msg) {
			t.Fatalf("--target-timeline %s: %v, want an error saying %q", want, err, msg)
		}
	}
	// A timeline that branched off before the backup started is not one
	// recovery from it can follow, and the backup lies on a forked branch
	// (TestAbandonedBranchBackup): refused unless a timeline is named.
	arch.put("00000005.history", fmt.Appendf(nil, "1\t%s\tbefore the backup\n", bstart-8))
	if got, err := choose(t, d, B, "", 0); err == nil || !strings.Contains(err.Error(), "after timeline 5 branched off it") {
		t.Fatalf("with a timeline branching before the backup: %d, %v; want a refusal", got, err)
	}
	if _, err := choose(t, d, B, "5", 0); err == nil || !strings.Contains(err.Error(), "does not branch") {
		t.Fatalf("--target-timeline 5 (branched before the backup): %v", err)
	}
	if got, err := choose(t, d, B, "2", 0); err != nil || got != 2 {
		t.Fatalf("with a timeline branching before the backup, --target-timeline 2: %d, %v", got, err)
	}
	if err := os.Remove(arch.path("00000005.history")); err != nil {
		t.Fatal(err)
	}

	// Timeline 1 goes on in the segment holding the switch: a fork.
	w1.add(0, 0, []byte("the old primary goes on"))
	arch.upload(w1, uint64(switchAt)/fakeSegSize)
	_, err := choose(t, d, B, "", 0)
	if err == nil || !strings.Contains(err.Error(), "timeline 1 goes on after "+switchAt.String()) || !strings.Contains(err.Error(), "timeline 2 branches off timeline 1") ||
		!strings.Contains(err.Error(), "--target-timeline") {
		t.Fatalf("timeline 1 going on in the switch's segment: %v", err)
	}
	for _, tc := range []struct {
		want string
		tli  uint32
	}{{"latest", 2}, {"current", 1}, {"2", 2}} {
		if got, err := choose(t, d, B, tc.want, 0); err != nil || got != tc.tli {
			t.Fatalf("forked, --target-timeline %q: timeline %d, %v; want %d", tc.want, got, err, tc.tli)
		}
	}
	// An LSN target before the fork does not depend on it.
	if got, err := choose(t, d, B, "", switchAt-8); err != nil || got != 1 {
		t.Fatalf("forked, LSN target before the switch: %d, %v; want 1", got, err)
	}

	// Timeline 1 goes on into later segments.
	w1.fill(12)
	arch.upload(w1, uint64(switchAt)/fakeSegSize)
	if _, err := choose(t, d, B, "", 0); err == nil || !strings.Contains(err.Error(), wal.SegmentName(1, uint64(switchAt)/fakeSegSize+1, fakeSegSize)+" is archived") {
		t.Fatalf("timeline 1 going on in later segments: %v", err)
	}

	// Two timelines branch off timeline 1 where it ended (a second
	// promotion of a copy), timeline 1 itself not going on.
	arch2 := newTestArchive(t, "local", id)
	w1b := newFakeWAL()
	w1b.add(1, 0, []byte("start"))
	w1b.add(0, 0, []byte("end"))
	w1b.fill(15)
	at := wal.LSN(w1b.pos)
	arch2.upload(w1b, 1)
	for _, tli := range []uint32{2, 3} {
		w := w1b.fork(tli)
		w.add(0, 0x90, []byte("end of recovery"))
		arch2.upload(w, uint64(at)/fakeSegSize)
		arch2.put(wal.HistoryFileName(tli), fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", at))
	}
	d2 := testDeps(t, id, arch2)
	if _, err := choose(t, d2, B, "", 0); err == nil || !strings.Contains(err.Error(), "timeline 2 branches off") || !strings.Contains(err.Error(), "timeline 3 branches off") ||
		strings.Contains(err.Error(), "goes on") {
		t.Fatalf("two timelines branching off timeline 1: %v", err)
	}
	if got, err := choose(t, d2, B, "3", 0); err != nil || got != 3 {
		t.Fatalf("two branches, --target-timeline 3: %d, %v", got, err)
	}
}

// TestAbandonedBranchBackup: the old primary, not yet fenced, completes
// backup B on timeline 1 after a standby was promoted to timeline 2. A
// restore from B that stays on timeline 1 loses every write on timeline
// 2: without --target-timeline it is refused, naming the situation; B is
// skipped when a backup is picked automatically; --target-timeline 2
// cannot use B (timeline 2 branches off before B is consistent), and
// current restores B's branch knowingly.
func TestAbandonedBranchBackup(t *testing.T) {
	ctx := context.Background()
	id, _ := age.GenerateX25519Identity()
	w1 := newFakeWAL()
	astart, _ := w1.add(1, 0, []byte("A start"))
	_, astop := w1.add(0, 0, []byte("A end"))
	w1.fill(15) // into segment 2
	switchAt := wal.LSN(w1.pos)
	w2 := w1.fork(2)
	w2.add(0, 0x90, []byte("end of recovery"))
	w2.fill(3)
	cstart, _ := w2.add(1, 0, []byte("C start (on the new primary)"))
	_, cstop := w2.add(0, 0, []byte("C end"))
	w2.fill(12)
	// The old primary goes on and takes B.
	w1.fill(3)
	bstart, _ := w1.add(1, 0, []byte("B start (on the old primary)"))
	_, bstop := w1.add(0, 0, []byte("B end"))
	w1.fill(12)
	arch := newTestArchive(t, "local", id)
	arch.upload(w1, 1)
	arch.upload(w2, uint64(switchAt)/fakeSegSize)
	arch.put("00000002.history", fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", switchAt))
	d := testDeps(t, id, arch)
	A := testBackup("20261126T080000F", 1, astart, astop)
	C := testBackup("20261126T090000F", 2, cstart, cstop)
	B := testBackup("20261126T091500F", 1, bstart, bstop)

	want := fmt.Sprintf("backup %s was taken on timeline 1 after timeline 2 branched off it at %s", B.ID, switchAt)
	for _, limit := range []wal.LSN{0, bstop} {
		if got, err := choose(t, d, B, "", limit); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--target-timeline current") {
			t.Fatalf("backup on the abandoned timeline 1 (limit %s): timeline %d, %v; want an error saying %q", limit, got, err, want)
		}
	}
	if _, err := choose(t, d, B, "2", 0); err == nil || !strings.Contains(err.Error(), "does not branch") {
		t.Fatalf("backup on the abandoned timeline 1, --target-timeline 2: %v", err)
	}
	for _, tc := range []struct {
		want string
		tli  uint32
	}{{"current", 1}, {"1", 1}, {"latest", 1}} {
		if got, err := choose(t, d, B, tc.want, 0); err != nil || got != tc.tli {
			t.Fatalf("backup on the abandoned timeline 1, --target-timeline %q: timeline %d, %v; want %d", tc.want, got, err, tc.tli)
		}
	}
	// C, on the new primary, follows timeline 2.
	if got, err := choose(t, d, C, "", 0); err != nil || got != 2 {
		t.Fatalf("backup on timeline 2: %d, %v", got, err)
	}
	// A timeline branching off B's timeline between its start and its end
	// is no more one recovery from B can follow.
	mid := testBackup("20261126T080500F", 1, switchAt-8, switchAt+8)
	if _, err := choose(t, d, mid, "2", 0); err == nil || !strings.Contains(err.Error(), "does not branch") {
		t.Fatalf("timeline 2 branching off inside the backup, --target-timeline 2: %v", err)
	}

	// Picked automatically, B is skipped for C (the newest on the path),
	// and for a time or LSN target it fits for the newest before it.
	all := []*backup.Manifest{A, C, B}
	always := func(*backup.Manifest) bool { return true }
	for _, tc := range []struct {
		want string
		fits func(*backup.Manifest) bool
		pick *backup.Manifest
	}{
		{"", always, C},
		{"2", always, C},
		{"", func(m *backup.Manifest) bool { return m.StopLSN <= cstop }, C},
		{"", func(m *backup.Manifest) bool { return m != C }, A},
		{"current", always, B},
		{"latest", always, B},
	} {
		on, err := onPath(ctx, d, all, tc.want)
		if err != nil {
			t.Fatal(err)
		}
		if got := newestFit(on, all, tc.fits); got != tc.pick {
			t.Fatalf("picking among %s, %s and %s, --target-timeline %q: picked %s, want %s", A.ID, C.ID, B.ID, tc.want, got.ID, tc.pick.ID)
		}
	}
	// Only B: it is picked, and the restore refuses naming why.
	on, err := onPath(ctx, d, []*backup.Manifest{B}, "")
	if err != nil || len(on) != 1 || on[0] != B {
		t.Fatalf("only B: %v, %v", on, err)
	}
}

// TestMissingHistoryFile: a timeline whose segments are archived but
// whose history file is not would be invisible, and recovery would stop
// at its parent's end: the restore refuses, naming the file.
func TestMissingHistoryFile(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	w1 := newFakeWAL()
	bstart, _ := w1.add(1, 0, []byte("start"))
	_, bstop := w1.add(0, 0, []byte("end"))
	w1.fill(15)
	switchAt := wal.LSN(w1.pos)
	w2 := w1.fork(2)
	w2.add(0, 0x90, []byte("end of recovery"))
	w2.fill(30)
	arch := newTestArchive(t, "local", id)
	arch.upload(w1, 1)
	arch.upload(w2, uint64(switchAt)/fakeSegSize)
	d := testDeps(t, id, arch)
	B := testBackup("20261126T080000F", 1, bstart, bstop)

	got, err := choose(t, d, B, "", 0)
	if err == nil || !strings.Contains(err.Error(), "timeline 2 has archived segments") || !strings.Contains(err.Error(), "00000002.history") ||
		!strings.Contains(err.Error(), "--target-timeline current") {
		t.Fatalf("timeline 2 archived without its history file: timeline %d, %v; want a refusal naming 00000002.history", got, err)
	}
	// Accepting the parent's end, or a target before timeline 2's oldest
	// segment, restores timeline 1.
	if got, err := choose(t, d, B, "current", 0); err != nil || got != 1 {
		t.Fatalf("--target-timeline current: %d, %v", got, err)
	}
	if got, err := choose(t, d, B, "", bstop); err != nil || got != 1 {
		t.Fatalf("LSN target before timeline 2's segments: %d, %v", got, err)
	}
	// With the history file, timeline 2 is followed.
	arch.put("00000002.history", fmt.Appendf(nil, "1\t%s\tno recovery target specified\n", switchAt))
	if got, err := choose(t, d, B, "", 0); err != nil || got != 2 {
		t.Fatalf("with 00000002.history: %d, %v", got, err)
	}
	// A timeline above the one followed, again without history.
	w3 := w2.fork(3)
	w3.fill(2)
	arch.upload(w3, uint64(w2.pos)/fakeSegSize)
	if _, err := choose(t, d, B, "", 0); err == nil || !strings.Contains(err.Error(), "00000003.history") || !strings.Contains(err.Error(), "--target-timeline 2") {
		t.Fatalf("timeline 3 archived without its history file: %v", err)
	}
}
