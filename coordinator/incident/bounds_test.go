package incident

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A condition whose message changes on every tick (a growing lag) must not
// grow the timeline past MaxTimeline between compactions.
func TestObserveCapsTimeline(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxTimeline = 5
	var st State
	for i := 0; i < 50; i++ {
		var err error
		st, _, err = Observe(st, sig(uint64(i+1), "lag", fmt.Sprintf("lag %d MB", i)), lim, t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
	}
	in := st.Incidents[0]
	if len(in.Timeline) != 5 || in.Timeline[0].Kind != KindOpened || in.Timeline[4].Message != "lag 49 MB" || in.TimelineDropped != 45 {
		t.Fatalf("timeline %d entries (dropped %d), first %+v last %+v; want 5, first the opening, last lag 49 MB, 45 dropped",
			len(in.Timeline), in.TimelineDropped, in.Timeline[0], in.Timeline[len(in.Timeline)-1])
	}
	if in.Occurrences != 50 {
		t.Fatalf("occurrences = %d, want 50", in.Occurrences)
	}
}

func TestDecisionsRefuseBadLimits(t *testing.T) {
	st, _, _ := Observe(State{}, sig(1, "a", "x"), DefaultLimits(), t0)
	var zero Limits
	cases := []struct {
		name string
		do   func() (State, error)
	}{
		{"observe", func() (State, error) { s, _, err := Observe(st, sig(2, "b", "y"), zero, t0); return s, err }},
		{"clear", func() (State, error) { s, _, err := Clear(st, "a", "c", "", zero, t0); return s, err }},
		{"ack", func() (State, error) { return Ack(st, "INC-1", "alice", "", zero, t0) }},
		{"resolve", func() (State, error) { return Resolve(st, "INC-1", "alice", "n", zero, t0) }},
		{"note", func() (State, error) { return AddNote(st, "INC-1", "alice", "n", zero, t0) }},
	}
	for _, c := range cases {
		got, err := c.do()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "limits") || !reflect.DeepEqual(got, st) {
			t.Errorf("%s with zero limits: err = %v, want ErrInvalid naming the limits and the state unchanged", c.name, err)
		}
	}
}

func TestAddNote(t *testing.T) {
	lim := DefaultLimits()
	st, _, _ := Observe(State{}, sig(1, "a", "x"), lim, t0)
	got, err := AddNote(st, "INC-1", "alice", "looking at the disk", lim, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	in := got.Incidents[0]
	if len(in.Notes) != 1 || in.Notes[0].Text != "looking at the disk" || in.Timeline[len(in.Timeline)-1].Kind != KindNote {
		t.Fatalf("note not recorded: %+v", in)
	}
	if len(st.Incidents[0].Notes) != 0 {
		t.Fatal("AddNote modified its input state")
	}
	if _, err := AddNote(st, "INC-1", "alice", "", lim, t0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "note") {
		t.Fatalf("empty note: err = %v", err)
	}
	if _, err := AddNote(st, "INC-7", "alice", "x", lim, t0); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "INC-7") {
		t.Fatalf("unknown incident: err = %v", err)
	}
}

// The same commands applied on two coordinators give the same state.
func TestDeterministic(t *testing.T) {
	run := func() State {
		lim := DefaultLimits()
		var st State
		for i := 0; i < 20; i++ {
			st, _, _ = Observe(st, sig(uint64(100+i), fmt.Sprintf("k%d", i%3), fmt.Sprintf("m%d", i%4)), lim, t0.Add(time.Duration(i)*time.Minute))
		}
		st, _ = Ack(st, IDFor(101), "alice", "mine", lim, t0.Add(30*time.Minute))
		st, _, _ = Escalate(st, policy(), t0.Add(time.Hour))
		st, _, _ = Compact(st, lim, t0.Add(2*time.Hour))
		return st
	}
	a, b := run(), run()
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs differ:\n%+v\n%+v", a, b)
	}
	if len(a.Incidents) != 3 {
		t.Fatalf("incidents = %d, want 3 (one per dedup key)", len(a.Incidents))
	}
}

func TestNotesBounded(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxNotes = 2
	st, _, _ := Observe(State{}, sig(1, "a", "x"), lim, t0)
	st, _ = AddNote(st, "INC-1", "alice", "one", lim, t0)
	st, _ = AddNote(st, "INC-1", "alice", "two", lim, t0)
	if _, err := AddNote(st, "INC-1", "alice", "three", lim, t0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "max_notes") {
		t.Fatalf("third note: err = %v, want ErrInvalid naming max_notes", err)
	}
	// Acknowledging without a note still works at the limit.
	if _, err := Ack(st, "INC-1", "alice", "", lim, t0); err != nil {
		t.Fatalf("ack without note at the notes limit: %v", err)
	}
}
