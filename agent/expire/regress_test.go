package expire

import (
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
