package expire

import (
	"slices"

	"github.com/pgdr/pgdr/pkg/wal"
	"testing"
	"time"
)

// A long backup that starts just before the PITR window's edge but stops
// hours after it cannot restore targets between the edge and its stop: the
// older backup that can must anchor the window (R1).
func TestDecidePITRAnchorByStopTime(t *testing.T) {
	edge := now.Add(-DefaultPITRWindow)
	f1 := bk("F1", TypeFull, "", day(-10), 1, 2, 3)
	f2 := bk("F2", TypeFull, "", edge.Add(-time.Minute), 1, 10, 40)
	f2.StopTime = edge.Add(3 * time.Hour) // a 3h backup
	f3 := bk("F3", TypeFull, "", day(-1), 1, 60, 61)
	// Stopped within the skew margin before the edge: not an anchor either.
	f4 := bk("F4", TypeFull, "", edge.Add(-PITRSkewMargin/2-time.Minute), 1, 5, 6)
	p, err := Decide(Input{Backups: []Backup{f1, f2, f3, f4}, WAL: segs(1, 1, 70), Now: now,
		Spec: Spec{Types: map[string]Rule{TypeFull: {Count: 1}}, PITRWindow: DefaultPITRWindow}})
	if err != nil {
		t.Fatal(err)
	}
	if p.PITRAnchor != "F1" {
		t.Errorf("anchor %s, want F1 (the newest backup stopped before the edge less the margin)", p.PITRAnchor)
	}
	for _, d := range p.Delete {
		if d.ID == "F1" {
			t.Errorf("F1 deleted: a target at edge+1h (before F2 is consistent at edge+3h) is no longer restorable")
		}
	}
	for _, n := range p.WALDeleteNames {
		if n >= segs(1, 2, 2)[0] {
			t.Errorf("WAL %s deleted, but it follows the anchor F1's start", n)
		}
	}
}

// An untrusted manifest claiming a huge WAL range (or any range) keeps no
// WAL and costs nothing to decide on; a trusted one with a wide range is
// evaluated as an interval, not a list of segment names (R4).
func TestDecideHugeForgedWALRange(t *testing.T) {
	forged := bk("20261201T000000F", TypeFull, "", day(-2), 1, 0, 0)
	forged.StopLSN = wal.LSN(1 << 62)
	forged.Untrusted = "not signed by a trusted key"
	done := make(chan struct{})
	var p *Plan
	var err error
	go func() {
		defer close(done)
		p, err = Decide(Input{Backups: []Backup{bk("F3", TypeFull, "", day(-1), 1, 60, 61), forged}, WAL: segs(1, 1, 70), Now: now,
			Spec: fullRule(1)})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Decide did not return within 30s on a forged 2^62-byte WAL range")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(p.WALDeleteNames), 59; got != want {
		t.Errorf("%d WAL files deleted, want %d (the forged manifest keeps no WAL)", got, want)
	}
	if !slices.ContainsFunc(p.Keep, func(d Decision) bool { return d.ID == forged.ID }) {
		t.Errorf("the untrusted backup is not kept: %+v", p.Delete)
	}
	// Trusted and pinned, with a 2^62-byte range: kept as one interval.
	wide := pinned(bk("20261201T000000F", TypeFull, "", day(-20), 1, 0, 0), "")
	wide.StopLSN = wal.LSN(1 << 62)
	p, err = Decide(Input{Backups: []Backup{bk("F3", TypeFull, "", day(-1), 1, 60, 61), wide}, WAL: segs(1, 1, 70), Now: now,
		Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.WALDeleteNames) != 0 {
		t.Errorf("WAL %v deleted inside a pinned backup's range", p.WALDeleteNames)
	}
}
