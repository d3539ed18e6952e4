package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestSwitchoverPromoteRetryCoversRefusalWindow: the target acknowledged
// the old primary's failsafe ping while the old primary was being stopped
// (after the switchover's preflight), and refuses promotion for the window
// its report states (its own lease_ttl, or the ping's: longer than this
// coordinator's during a rolling change of lease_ttl). The leader orders it
// again until that window has passed, not only for its own lease TTL:
// giving up leaves the recorded primary unpromoted with the old one
// stopped (for good while the cluster is paused).
func TestSwitchoverPromoteRetryCoversRefusalWindow(t *testing.T) {
	s := testLeader(t)
	s.cfg.Failover.LeaseTTL.Duration = time.Second // the agent's window is 4 of them
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	s.leaderCtx, s.leaderEnd = ctx, cancel
	s.mu.Unlock()
	for _, m := range []string{"a", "b"} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0}, "test"); err != nil {
		t.Fatal(err)
	}
	const window = 4 * time.Second
	var mu sync.Mutex
	var ackedAt time.Time
	report := func(node string, primary bool, lsn uint64) {
		now := time.Now()
		r := &pgdrv1.HealthReport{Cluster: "main", Node: node, Time: timestamppb.New(now), PostmasterAlive: true, Connectable: true, Timeline: 1}
		if primary {
			r.CurrentLsn = lsn
			s.primaryLSN.observe("main", node, 1, lsn)
		} else {
			r.InRecovery, r.Streaming, r.ReceiveLsn, r.ReplayLsn = true, true, lsn, lsn
			mu.Lock()
			if !ackedAt.IsZero() {
				r.FailsafeAckedAt, r.FailsafePrimary, r.FailsafeEpoch, r.FailsafeRefuseMs = timestamppb.New(ackedAt), "a", 1, window.Milliseconds()
			}
			mu.Unlock()
		}
		s.view.put(r, now, time.Time{})
	}
	report("a", true, 1000)
	report("b", false, 1000)
	promotes := 0
	agents := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
		switch {
		case node == "a" && cmd.GetDemote() != nil:
			// a's lease renewal failed meanwhile: b acknowledged its
			// failsafe ping just before a stopped.
			mu.Lock()
			ackedAt = time.Now()
			mu.Unlock()
			report("b", false, 2000)
			return &pgdrv1.CommandResult{Ok: true, Output: "stopped: shutdown_checkpoint_lsn=0/3E8"}
		case node == "b" && cmd.GetPromote() != nil:
			mu.Lock()
			promotes++
			refusing := time.Since(ackedAt) < window
			mu.Unlock()
			if refusing {
				return &pgdrv1.CommandResult{Error: "refuses promotion: acknowledged a's failsafe ping 1s ago"}
			}
			return &pgdrv1.CommandResult{Ok: true, Output: "promoted"}
		}
		return &pgdrv1.CommandResult{Ok: true}
	}}
	agents.start(t, s, "a", "b")
	resp, err := s.switchover("main", "b", "test")
	if err != nil {
		t.Fatalf("switchover: %v (orders %s)", err, strings.Join(agents.orders(), ", "))
	}
	if resp.GetPrimary() != "b" || promotes < 2 {
		t.Fatalf("primary %s after %d promote orders", resp.GetPrimary(), promotes)
	}
}
