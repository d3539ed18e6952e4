package drillsched

import (
	"errors"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/schedule"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func m(name, role string, healthy, stream bool, lag int64) schedule.Member {
	return schedule.Member{Name: name, Role: role, Healthy: healthy, Connectable: true, Stream: stream, ReplayLag: lag}
}

// TestPlace: the decision table of where a drill runs and when it may not.
func TestPlace(t *testing.T) {
	pri := m("a1", schedule.RolePrimary, true, true, 0)
	r2 := m("a2", schedule.RoleReplica, true, true, 100)
	r3 := m("a3", schedule.RoleReplica, true, true, 10)
	sick := m("a4", schedule.RoleReplica, false, true, 0)
	noStream := m("a5", schedule.RoleReplica, true, false, 0)
	unknownLag := m("a6", schedule.RoleReplica, true, true, -1)
	for _, tc := range []struct {
		name    string
		members []schedule.Member
		runs    []Run
		want    string
		node    string
		err     error
	}{
		{"least lagging standby", []schedule.Member{pri, r2, r3}, nil, "", "a3", nil},
		{"unknown lag last", []schedule.Member{pri, unknownLag, r2}, nil, "", "a2", nil},
		{"sick and streamless standbys skipped: never the primary", []schedule.Member{pri, sick, noStream}, nil, "", "", ErrNoNode},
		{"named member", []schedule.Member{pri, r2, r3}, nil, "a2", "a2", nil},
		{"named primary refused (a drill never runs on the primary)", []schedule.Member{pri, r2}, nil, "a1", "", ErrNoNode},
		{"named unhealthy", []schedule.Member{pri, sick}, nil, "a4", "", ErrNoNode},
		{"named without stream", []schedule.Member{pri, noStream}, nil, "a5", "", ErrNoNode},
		{"named unknown", []schedule.Member{pri}, nil, "zz", "", ErrNoNode},
		{"nobody", []schedule.Member{sick}, nil, "", "", ErrNoNode},
		{"one at a time", []schedule.Member{pri, r2}, []Run{{ID: "d1", Node: "a2"}}, "", "", ErrBusy},
		{"an ended drill does not block", []schedule.Member{pri, r2}, []Run{{ID: "d1", Node: "a2", Result: "failed"}}, "", "a2", nil},
	} {
		node, why, err := Place(Input{Now: t0, Members: tc.members, Runs: tc.runs}, tc.want)
		if node != tc.node || !errors.Is(err, tc.err) || (err == nil && why == "") {
			t.Errorf("%s: got %q (%s), %v; want %q, %v", tc.name, node, why, err, tc.node, tc.err)
		}
	}
}

// TestOverdue: a drill in flight is over once its timeout and the grace
// passed; an ended one never.
func TestOverdue(t *testing.T) {
	runs := []Run{{ID: "old", Result: "ok", Due: t0.Add(-time.Hour)}, {ID: "d1", Due: t0}}
	for _, tc := range []struct {
		now  time.Time
		want string
	}{
		{t0.Add(-time.Second), ""},
		{t0.Add(30 * time.Second), ""},
		{t0.Add(time.Minute), "d1"},
	} {
		if got := Overdue(Input{Now: tc.now, Runs: runs, Grace: time.Minute}); got != tc.want {
			t.Errorf("at %s: %q, want %q", tc.now, got, tc.want)
		}
	}
}

// hourly is a schedule with a slot at every whole hour.
func hourly(after time.Time) (time.Time, error) { return after.Truncate(time.Hour).Add(time.Hour), nil }

// TestScheduled: the decision table of scheduled drills: not due yet; due
// on time; many missed slots run once; one at a time (an operator's drill
// in flight makes the slot wait); counted from the newest scheduled slot
// (an operator's drill does not count); the named node; nobody to run it.
func TestScheduled(t *testing.T) {
	pri := m("a1", schedule.RolePrimary, true, true, 0)
	r2 := m("a2", schedule.RoleReplica, true, true, 0)
	since := t0.Add(-30 * time.Minute) // 11:30
	for _, tc := range []struct {
		name   string
		now    time.Time
		runs   []Run
		node   string
		start  bool
		slot   time.Time
		missed int
		onNode string
	}{
		{"not due", t0.Add(-time.Minute), nil, "", false, time.Time{}, 0, ""},
		{"due on time", t0.Add(time.Second), nil, "", true, t0, 1, "a2"},
		{"missed slots run once", t0.Add(5*time.Hour + time.Minute), nil, "", true, t0.Add(5 * time.Hour), 6, "a2"},
		{"done for the slot", t0.Add(30 * time.Minute), []Run{{ID: "s1", Result: "ok", Slot: t0}}, "", false, time.Time{}, 0, ""},
		{"an operator's drill does not count", t0.Add(30 * time.Minute), []Run{{ID: "m1", Result: "ok"}}, "", true, t0, 1, "a2"},
		{"waits for the drill in flight", t0.Add(time.Minute), []Run{{ID: "m1", Node: "a2"}}, "", false, t0, 1, ""},
		{"the named node", t0.Add(time.Minute), nil, "a2", true, t0, 1, "a2"},
		{"the named node is the primary now: waits", t0.Add(time.Minute), nil, "a1", false, t0, 1, ""},
		{"prefer-standby spelled out", t0.Add(time.Minute), nil, "prefer-standby", true, t0, 1, "a2"},
		{"the named node is gone", t0.Add(time.Minute), nil, "a9", false, t0, 1, ""},
	} {
		d, err := Scheduled(Input{Now: tc.now, Members: []schedule.Member{pri, r2}, Runs: tc.runs}, Schedule{Next: hourly, Since: since, Node: tc.node})
		if err != nil || d.Start != tc.start || !d.Slot.Equal(tc.slot) || d.Missed != tc.missed || d.Node != tc.onNode || d.Reason == "" {
			t.Errorf("%s: %+v, %v", tc.name, d, err)
		}
	}
	// Bounded: a schedule every second, down for a day.
	every := func(after time.Time) (time.Time, error) { return after.Truncate(time.Second).Add(time.Second), nil }
	d, err := Scheduled(Input{Now: t0, Members: []schedule.Member{r2}}, Schedule{Next: every, Since: t0.Add(-24 * time.Hour)})
	if err != nil || !d.Start || !d.Slot.Equal(t0) || d.Missed != maxSlots {
		t.Errorf("every second for a day: %+v, %v", d, err)
	}
}
