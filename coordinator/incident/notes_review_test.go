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

// TestDueResolvedNeverNotified: an incident resolved before any level was
// told (channels configured later, or a leader without channels) owes
// nothing: enabling channels on a running cluster does not announce every
// resolved incident kept.
func TestDueResolvedNeverNotified(t *testing.T) {
	p := EscalationPolicy{Levels: []Level{{Name: "oncall", Channels: []string{"pd"}}}}
	in := Incident{ID: "INC-7", Status: Resolved, EscalationLevel: 0}
	if sends, _ := Due(in, p); sends != nil {
		t.Errorf("resolved, never notified: due %+v, want nothing", sends)
	}
	in.NotifiedLevels, in.NotifiedStatus = 1, Open
	if sends, _ := Due(in, p); len(sends) != 1 || sends[0].Status != Resolved {
		t.Errorf("resolved after level 0 was told: due %+v, want the resolution", sends)
	}
}
