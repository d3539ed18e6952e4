package server

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestMinIntervalRefusalRecordedOnce: a primary lost again within
// min_interval of the last failover is refused once, not at every tick of
// the leader loop (the reason's "was 1.25s ago ... in 58.75s" changes at
// each tick): one failover-refused event in the Raft log and one count in
// pgdr_coordinator_failovers_refused_total{reason="min_interval"}.
func TestMinIntervalRefusalRecordedOnce(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	for _, n := range []string{"pg-a1", "pg-a2"} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: n, Cluster: "main", Region: "r1", Dsn: "host=" + n, ApiUrl: "http://" + n + ":8008"}})
	}
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	recordEv(t, s, kindFailoverIntent, "pg-a1", 1, "promote pg-a1", nil)

	// pg-a1 is down with its lease expired; pg-a2 is a healthy replica.
	s.leases.mu.Lock()
	s.leases.m["main"] = lease{holder: "pg-a1", epoch: 1, expires: time.Now().Add(-time.Second)}
	s.leases.mu.Unlock()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) { // fresh reports while the leader loop ticks
		now := time.Now()
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", Time: timestamppb.New(now)}, now, time.Time{})
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true, InRecovery: true, Timeline: 1,
			Streaming: true, ReceiveLsn: 50 << 20, ReplayLsn: 50 << 20, Time: timestamppb.New(now)}, now, time.Time{})
		time.Sleep(50 * time.Millisecond)
	}
	n := 0
	for _, ev := range s.fsm.History("main", 0, 1000) {
		if ev.GetKind() == kindFailoverRefused {
			n++
			t.Logf("refused: %s", ev.GetMessage())
		}
	}
	if n != 1 {
		t.Errorf("%d failover-refused events in 1.5s, want 1", n)
	}
	if v, _ := series(gather(t, s), "pgdr_coordinator_failovers_refused_total", "reason", failover.RefusedMinInterval); v != 1 {
		t.Errorf("pgdr_coordinator_failovers_refused_total{reason=min_interval} = %v, want 1", v)
	}
}

// TestLeaderStartsTotals: a leader whose voters all know StartTotals
// (here: itself alone) proposes it, and the totals are counted from then.
func TestLeaderStartsTotals(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	testutil.WaitFor(t, 10*time.Second, "the totals are started", func() (bool, error) {
		var since uint64
		s.fsm.Read(func(st *pgdrv1.State) { since = st.GetTotalsSinceIndex() })
		return since != 0, nil
	})
}
