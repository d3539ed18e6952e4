package server

import (
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/divergencesum"
)

// TestRejoinWaitCoversDivergenceReport: the rejoin waits (failover and
// switchover) give the agent its 5 minutes for the rejoin itself plus the
// time its divergence report may take before it, so the report comes
// back with the result.
func TestRejoinWaitCoversDivergenceReport(t *testing.T) {
	if rejoinTimeout < 5*time.Minute+divergencesum.ReportTimeout {
		t.Errorf("rejoin wait %s, want at least 5m plus the report's %s", rejoinTimeout, divergencesum.ReportTimeout)
	}
}
