package incident

import (
	"strings"
	"testing"
)

// TestResolveAtNotesLimit: an incident whose notes are at the limit can
// still be resolved (a resolution needs a note; auto-resolve gives one):
// the note goes on the timeline only. Otherwise it would stay active for
// ever, counted against max_open.
func TestResolveAtNotesLimit(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxNotes = 2
	st, _, _ := Observe(State{}, sig(1, "a", "x"), lim, t0)
	st, _ = AddNote(st, "INC-1", "alice", "one", lim, t0)
	st, _ = AddNote(st, "INC-1", "alice", "two", lim, t0)
	got, err := Resolve(st, "INC-1", "alice", "disk replaced", lim, t0)
	if err != nil {
		t.Fatalf("resolve at the notes limit: %v", err)
	}
	in := got.Incidents[0]
	if in.Status != Resolved || len(in.Notes) != 2 || !strings.Contains(in.Timeline[len(in.Timeline)-1].Message, "disk replaced") {
		t.Errorf("resolved at the notes limit: status %s, %d notes, timeline %+v", in.Status, len(in.Notes), in.Timeline)
	}
	if _, err := Ack(st, "INC-1", "alice", "looking", lim, t0); err != nil {
		t.Errorf("ack with a note at the notes limit: %v", err)
	}
}
