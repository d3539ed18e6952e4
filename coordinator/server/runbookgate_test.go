package server

import (
	"strings"
	"testing"
)

// TestRunbookGate: a coordinator of the incidents era advertises feature
// level 4 and skips COMMAND_TYPE_RUNBOOK (proposed ignore_if_unknown), so
// runbooks need every voter at a level above it; IncidentsStarted alone
// would let such a voter's state go without the runbooks and runs.
func TestRunbookGate(t *testing.T) {
	if FeatureLevel <= incidentsFeatureLevel {
		t.Fatalf("this coordinator knows COMMAND_TYPE_RUNBOOK but advertises feature level %d, that of the incidents era (%d), whose voters skip it", FeatureLevel, incidentsFeatureLevel)
	}
	if FeatureLevel < runbooksFeatureLevel || runbooksFeatureLevel <= incidentsFeatureLevel {
		t.Fatalf("levels: this %d, runbooks %d, incidents %d", FeatureLevel, runbooksFeatureLevel, incidentsFeatureLevel)
	}
	voters := []string{"c1", "c2", "c3"}
	levels := map[string]int{"c2": incidentsFeatureLevel, "c3": runbooksFeatureLevel}
	if ok, why := votersReadyFor("c1", voters, levels, runbooksFeatureLevel, "runbooks"); ok || !strings.Contains(why, "voter c2 has feature level 4, runbooks needs 5") {
		t.Fatalf("runbooks with an incidents-era voter: %v %q", ok, why)
	}
	levels["c2"] = runbooksFeatureLevel
	if ok, why := votersReadyFor("c1", voters, levels, runbooksFeatureLevel, "runbooks"); !ok {
		t.Fatalf("runbooks with every voter at %d: %q", runbooksFeatureLevel, why)
	}
}
