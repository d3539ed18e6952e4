package server

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/config"
)

// TestGapToReport: the leaderless gap is recorded as a lost quorum by
// whoever saw it, once: a follower that saw the new leader reports it
// (the new leader may have restarted and seen no gap), a new leader whose
// own observation is not processed yet reports the gap still open, and a
// second leadership within a minute does not report the same gap again;
// a coordinator cut off alone from a leader that kept its quorum reports
// nothing.
func TestGapToReport(t *testing.T) {
	newRunner := func() *incidentRunner {
		r, err := newIncidentRunner(&Server{cfg: &config.Config{Name: "c1"}}, config.Incidents{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	r := newRunner()
	r.leaderSeen("", 5, t0)
	r.leaderSeen("c2", 6, t0.Add(40*time.Second))
	if _, _, ok := r.gapToReport(false, t0.Add(40*time.Second)); !ok {
		t.Errorf("a follower that saw a 40s gap end does not report it")
	}

	r = newRunner()
	r.leaderSeen("", 5, t0)
	if from, to, ok := r.gapToReport(true, t0.Add(40*time.Second)); !ok || !from.Equal(t0) || !to.Equal(t0.Add(40*time.Second)) {
		t.Errorf("new leader before its own observation: gap %s..%s %v, want %s..+40s", from, to, ok, t0)
	}

	r = newRunner()
	r.leaderSeen("", 5, t0)
	r.leaderSeen("c1", 6, t0.Add(40*time.Second))
	if _, _, ok := r.gapToReport(true, t0.Add(41*time.Second)); !ok {
		t.Fatalf("new leader after a 40s gap does not report it")
	}
	r.leaderSeen("c2", 7, t0.Add(50*time.Second)) // leadership moved without a gap
	r.leaderSeen("c1", 8, t0.Add(55*time.Second)) // and back
	if _, _, ok := r.gapToReport(true, t0.Add(56*time.Second)); ok {
		t.Errorf("the same gap reported again by the next leadership")
	}
	if _, _, ok := r.gapToReport(false, t0.Add(56*time.Second)); ok {
		t.Errorf("the same gap reported again as a follower")
	}

	// Cut off for five minutes from a leader that kept its quorum: the
	// same leader, in the same term, is found again.
	r = newRunner()
	r.leaderSeen("c2", 5, t0)
	r.leaderSeen("", 5, t0.Add(time.Second))
	if r.leaderSeen("c2", 5, t0.Add(5*time.Minute)) {
		if _, _, ok := r.gapToReport(false, t0.Add(5*time.Minute+3*time.Second)); ok {
			t.Errorf("a coordinator cut off from a leader that kept its quorum reports a lost quorum")
		}
	}
}
