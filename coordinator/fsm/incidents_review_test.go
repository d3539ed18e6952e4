package fsm

import (
	"strings"
	"testing"
)

// TestIncidentFromMultilineError: a failed backup whose error text has
// several lines (pg_basebackup's stderr) or other control characters still
// opens its incident; the text is kept, control characters made visible.
func TestIncidentFromMultilineError(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	startIncidents(h)
	h.mustApply(tBackupRun, intent("r1", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r1", RunFailed, "pg_basebackup: error: could not connect\r\nFATAL:\tno pg_hba.conf entry\x1b[0m"))
	h.mustApply(tRecordEvnt, event("failover-refused", "pg-a2", "no candidate:\n pg-a2 lags 3 GB", nil))
	got := h.f.Incidents("main", false, "")
	if len(got) != 2 {
		t.Fatalf("incidents after a failed backup and a refusal with multi-line messages: %d, want 2: %v", len(got), got)
	}
	if m := got[0].GetTimeline()[0].GetMessage(); !strings.Contains(m, "could not connect") || !strings.Contains(m, "no pg_hba.conf entry") {
		t.Errorf("backup incident message %q lost the error text", m)
	}
}
