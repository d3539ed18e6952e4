package server

import (
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestMembersHealthyGauges: pgdr_coordinator_members_healthy and _unhealthy
// count what the leader's status judges (one judgement per scrape, from
// the FSM's shared cluster views), 0 on a follower.
func TestMembersHealthyGauges(t *testing.T) {
	s := testServer(t, Options{})
	lagCluster(t, s) // a (primary), b
	applyDirect(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Cluster: "main", Name: "c", Region: "eu-west-1"}}) // never reports
	if h, u := gauge(t, s, "pgdr_coordinator_members_healthy", nil), gauge(t, s, "pgdr_coordinator_members_unhealthy", nil); h != 0 || u != 0 {
		t.Fatalf("not leading: healthy %v, unhealthy %v; want 0 and 0", h, u)
	}
	startInmemRaft(t, s) // (a new leader's view starts empty)
	now := time.Now()
	s.ingestReport(writable("a", 600*mib), now)
	s.ingestReport(standby("b", 600*mib), now)
	count := func() (healthy, unhealthy float64) {
		for _, c := range s.clusterStatus("") {
			for _, m := range c.GetMembers() {
				if m.GetHealthy() {
					healthy++
				} else {
					unhealthy++
				}
			}
		}
		return healthy, unhealthy
	}
	for _, step := range []struct {
		name       string
		report     *pgdrv1.HealthReport
		healthy, u float64
	}{
		{"a and b reporting, c never", nil, 2, 1},
		{"a's PostgreSQL down", pgDown("a"), 1, 2},
		{"a back", writable("a", 600*mib), 2, 1},
	} {
		if step.report != nil {
			s.ingestReport(step.report, time.Now())
		}
		h, u := gauge(t, s, "pgdr_coordinator_members_healthy", nil), gauge(t, s, "pgdr_coordinator_members_unhealthy", nil)
		wh, wu := count()
		if h != step.healthy || u != step.u || h != wh || u != wu {
			t.Fatalf("%s: gauges healthy %v, unhealthy %v; status counts %v and %v; want %v and %v", step.name, h, u, wh, wu, step.healthy, step.u)
		}
	}
}
