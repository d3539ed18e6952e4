package server

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestLastDrillOf: the RTO evidence of drills is the newest passed
// drill's restore time (fetch/write plus replay), never a failed or
// unfinished one's.
func TestLastDrillOf(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	run := func(id, result string, ok bool, fw, replay float64, at time.Time) *pgdrv1.DrillRun {
		r := &pgdrv1.DrillRun{Id: id, Result: result, Report: &pgdrv1.DrillReport{Ok: ok,
			Timings: &pgdrv1.DrillTimings{FetchWrite: fw, Replay: replay, Checks: 100, Total: fw + replay + 100}}}
		if !at.IsZero() {
			r.FinishedAt = timestamppb.New(at)
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		runs   []*pgdrv1.DrillRun
		want   float64
		wantAt time.Time
	}{
		{"none", nil, -1, time.Time{}},
		{"only failed", []*pgdrv1.DrillRun{run("a", "failed", false, 1, 2, t0)}, -1, time.Time{}},
		{"newest passed, failed after it", []*pgdrv1.DrillRun{run("a", "ok", true, 3, 4, t0), run("b", "ok", true, 5, 6, t0.Add(time.Hour)),
			run("c", "failed", false, 1, 1, t0.Add(2*time.Hour))}, 11, t0.Add(time.Hour)},
		{"an impossible restore time is not evidence", []*pgdrv1.DrillRun{run("a", "ok", true, 3, 4, t0),
			run("b", "ok", true, -1e9, 1, t0.Add(time.Hour)), run("c", "ok", true, math.NaN(), 0, t0.Add(2*time.Hour)),
			run("d", "ok", true, math.Inf(1), 0, t0.Add(3*time.Hour))}, 7, t0},
		{"in flight is not evidence", []*pgdrv1.DrillRun{run("a", "ok", true, 3, 4, t0), run("b", "", false, 0, 0, time.Time{})}, 7, t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := lastDrillOf(tc.runs)
			if tc.want < 0 {
				if d.Recorded {
					t.Fatalf("got %+v, want none recorded", d)
				}
				return
			}
			if !d.Recorded || d.Seconds != tc.want || !d.At.Equal(tc.wantAt) || d.Source != "drill" {
				t.Fatalf("got %+v, want %.0fs at %s from a drill", d, tc.want, tc.wantAt)
			}
		})
	}
}
