package gameday

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 4, 10, 0, 30, 0, time.UTC)

// hourly slots at :00.
func hourly(after time.Time) (time.Time, error) {
	return after.Truncate(time.Hour).Add(time.Hour), nil
}

// TestDecide: the decision table of game days.
func TestDecide(t *testing.T) {
	plan := []Plan{{Name: "regional", Next: hourly}}
	slot := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	rec := func(runs ...string) Record {
		return Record{ID: "GD-1", Name: "regional", Slot: slot, Deadline: t0.Add(time.Hour), Runbooks: 2, Runs: runs, Measured: map[string]bool{}}
	}
	measured := func(r Record, ids ...string) Record {
		for _, id := range ids {
			r.Measured[id] = true
		}
		return r
	}
	for _, tc := range []struct {
		name string
		in   Input
		kind Kind
		want Decision // the fields checked besides Kind
	}{
		{"nothing due yet", Input{Plans: plan, Since: slot}, None, Decision{}},
		{"slot due", Input{Plans: plan, Since: slot.Add(-time.Minute)}, Start, Decision{Name: "regional", Slot: slot, Missed: 1}},
		{"missed slots run once", Input{Plans: plan, Since: slot.Add(-5 * time.Hour)}, Start, Decision{Name: "regional", Slot: slot, Missed: 5}},
		{"once per slot", Input{Plans: plan, Since: slot.Add(-5 * time.Hour), Records: []Record{{ID: "GD-1", Name: "regional", Slot: slot, Result: "ok"}}}, None, Decision{}},
		{"an operator's game day does not take the slot", Input{Plans: plan, Since: slot.Add(-time.Minute), Records: []Record{{ID: "GD-1", Name: "regional", Result: "ok"}}}, Start, Decision{Name: "regional", Slot: slot, Missed: 1}},
		{"first runbook", Input{Plans: plan, Records: []Record{rec()}}, StartRunbook, Decision{ID: "GD-1", Position: 0}},
		{"first runbook waits for another run", Input{Plans: plan, Records: []Record{rec()}, OtherRun: "RB-9"}, None, Decision{ID: "GD-1"}},
		{"runbook in flight", Input{Plans: plan, Records: []Record{rec("RB-1")}, Runs: map[string]Run{"RB-1": {}}}, None, Decision{ID: "GD-1"}},
		{"ended run measured first", Input{Plans: plan, Records: []Record{rec("RB-1")}, Runs: map[string]Run{"RB-1": {Result: "done"}}}, Measure, Decision{ID: "GD-1", RunID: "RB-1"}},
		{"then the next runbook", Input{Plans: plan, Records: []Record{measured(rec("RB-1"), "RB-1")}, Runs: map[string]Run{"RB-1": {Result: "done"}}}, StartRunbook, Decision{ID: "GD-1", Position: 1}},
		{"a run not done ends it failed", Input{Plans: plan, Records: []Record{measured(rec("RB-1"), "RB-1")}, Runs: map[string]Run{"RB-1": {Result: "rolled_back"}}}, End, Decision{ID: "GD-1", Result: ResultFailed}},
		{"a failed run is measured first", Input{Plans: plan, Records: []Record{rec("RB-1")}, Runs: map[string]Run{"RB-1": {Result: "failed"}}}, Measure, Decision{ID: "GD-1", RunID: "RB-1"}},
		{"a run compacted away ends it failed", Input{Plans: plan, Records: []Record{rec("RB-1")}}, End, Decision{ID: "GD-1", Result: ResultFailed}},
		{"all done", Input{Plans: plan, Records: []Record{measured(rec("RB-1", "RB-2"), "RB-1", "RB-2")}, Runs: map[string]Run{"RB-1": {Result: "done"}, "RB-2": {Result: "done"}}}, End, Decision{ID: "GD-1", Result: ResultOK}},
		{"the window ends it", Input{Now: t0.Add(2 * time.Hour), Plans: plan, Records: []Record{rec("RB-1")}, Runs: map[string]Run{"RB-1": {}}}, End, Decision{ID: "GD-1", Result: ResultTimeout}},
		{"no game day on top of a run in flight (a timed-out game day's)", Input{Plans: plan, Since: slot.Add(-5 * time.Hour), Records: []Record{{ID: "GD-0", Name: "regional", Slot: slot.Add(-time.Hour), Runs: []string{"RB-1"}, Result: "timeout"}}, Runs: map[string]Run{"RB-1": {}}, OtherRun: "RB-1"}, None, Decision{}},
		{"an ended run is measured after the window too", Input{Now: t0.Add(2 * time.Hour), Plans: plan, Records: []Record{rec("RB-1")}, Runs: map[string]Run{"RB-1": {Result: "done"}}}, Measure, Decision{ID: "GD-1", RunID: "RB-1"}},
		{"every runbook done: ok after the window too", Input{Now: t0.Add(2 * time.Hour), Plans: plan, Records: []Record{measured(rec("RB-1", "RB-2"), "RB-1", "RB-2")}, Runs: map[string]Run{"RB-1": {Result: "done"}, "RB-2": {Result: "done"}}}, End, Decision{ID: "GD-1", Result: ResultOK}},
		{"the window ends it before the next runbook", Input{Now: t0.Add(2 * time.Hour), Plans: plan, Records: []Record{measured(rec("RB-1"), "RB-1")}, Runs: map[string]Run{"RB-1": {Result: "done"}}}, End, Decision{ID: "GD-1", Result: ResultTimeout}},
		{"one game day at a time: in flight first", Input{Plans: plan, Since: slot.Add(-5 * time.Hour), Records: []Record{{ID: "GD-0", Name: "regional", Result: "ok"}, rec("RB-1")}, Runs: map[string]Run{"RB-1": {}}}, None, Decision{ID: "GD-1"}},
	} {
		if tc.in.Now.IsZero() {
			tc.in.Now = t0
		}
		got, err := Decide(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got.Reason == "" {
			t.Errorf("%s: no reason", tc.name)
		}
		got.Reason = ""
		tc.want.Kind = tc.kind
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
