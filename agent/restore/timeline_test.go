package restore

import (
	"context"
	"fmt"
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
	// recovery from it can follow.
	arch.put("00000005.history", fmt.Appendf(nil, "1\t%s\tbefore the backup\n", bstart-8))
	if got, err := choose(t, d, B, "", 0); err != nil || got != 2 {
		t.Fatalf("with a timeline branching before the backup: %d, %v; want 2", got, err)
	}
	if _, err := choose(t, d, B, "5", 0); err == nil || !strings.Contains(err.Error(), "does not branch") {
		t.Fatalf("--target-timeline 5 (branched before the backup): %v", err)
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
