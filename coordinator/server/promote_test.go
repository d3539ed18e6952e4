package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// testLeader is a Server leading a one-voter in-memory Raft cluster, with
// the failover settings tests need; no gRPC, no gossip.
func testLeader(t *testing.T) *Server {
	t.Helper()
	cfg := &config.Config{Name: "c1"}
	cfg.Failover.CommandTimeout.Duration = 2 * time.Second
	cfg.Failover.LeaseTTL.Duration = time.Nanosecond // leases expire at once
	cfg.Health.StaleAfter.Duration = 10 * time.Second
	log := slog.New(slog.DiscardHandler)
	s := &Server{cfg: cfg, log: log, view: newView(), hub: newHub(), leases: newLeases(), judge: newJudgements(), syncer: newSyncer()}
	s.fsm = fsm.New(log, fsm.Options{})
	s.metrics = newMetrics(s)
	rc := raft.DefaultConfig()
	rc.LocalID = "c1"
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout, rc.CommitTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond, 5*time.Millisecond
	rc.Logger = hclogger(log, "raft", "")
	store := raft.NewInmemStore()
	addr, trans := raft.NewInmemTransport("")
	r, err := raft.NewRaft(rc, s.fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr}}}).Error(); err != nil {
		t.Fatal(err)
	}
	s.raft = r
	deadline := time.Now().Add(30 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("the one-voter raft did not elect itself within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// fakeAgents answer the leader's orders for members of cluster main: each
// member's answer is decided by answer (nil result: no answer), and every
// order is logged in arrival order.
type fakeAgents struct {
	mu     sync.Mutex
	log    []string
	answer func(node string, c *pgdrv1.AgentCommand) *pgdrv1.CommandResult
}

func (f *fakeAgents) start(t *testing.T, s *Server, nodes ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, n := range nodes {
		k := memberKey{"main", n}
		ch := s.hub.open(k)
		go func() {
			defer s.hub.close(k, ch)
			for {
				select {
				case <-ctx.Done():
					return
				case c := <-ch:
					f.mu.Lock()
					f.log = append(f.log, fmt.Sprintf("%s %s@%d", n, orderKind(c), c.GetEpoch()))
					answer := f.answer
					f.mu.Unlock()
					if r := answer(n, c); r != nil {
						r.Id, r.Cluster, r.Node = c.GetId(), "main", n
						s.hub.complete(r)
					}
				}
			}
		}()
	}
}

func (f *fakeAgents) orders() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func orderKind(c *pgdrv1.AgentCommand) string {
	switch c.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote:
		return "promote"
	case *pgdrv1.AgentCommand_Fence:
		return "fence"
	case *pgdrv1.AgentCommand_Follow:
		return "follow"
	}
	return fmt.Sprintf("%T", c.GetKind())
}

func index(list []string, s string) int {
	for i, v := range list {
		if strings.HasPrefix(v, s) {
			return i
		}
	}
	return -1
}

// TestFailoverAfterUnsettledPromote: issue 12 item 3, the leader's side.
// b was ordered to promote and answered "pending" (pg_promote did not
// finish; PostgreSQL completes it later) or did not answer at all. When
// the leader then fails over from b to c, b must be fenced first, at the
// recorded epoch (review D3: an order at the next, unrecorded epoch that
// arrives late would raise b's epoch past the recorded one); if it cannot
// be fenced, c is not promoted (the leader waits).
func TestFailoverAfterUnsettledPromote(t *testing.T) {
	for _, c := range []struct {
		name      string
		first     func(c *pgdrv1.AgentCommand) *pgdrv1.CommandResult // b's answer to its promote
		fenceable bool                                               // b answers the fence
		forced    bool                                               // a manual failover with --force
	}{
		{"pending, fenced", func(*pgdrv1.AgentCommand) *pgdrv1.CommandResult {
			return &pgdrv1.CommandResult{Pending: true, Error: "promotion pending: pg_promote did not finish within 55s"}
		}, true, false},
		{"no answer, fenced", func(*pgdrv1.AgentCommand) *pgdrv1.CommandResult { return nil }, true, false},
		{"pending, cannot be fenced", func(*pgdrv1.AgentCommand) *pgdrv1.CommandResult {
			return &pgdrv1.CommandResult{Pending: true, Error: "promotion pending"}
		}, false, false},
		{"pending, cannot be fenced, forced by the operator", func(*pgdrv1.AgentCommand) *pgdrv1.CommandResult {
			return &pgdrv1.CommandResult{Pending: true, Error: "promotion pending"}
		}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := testLeader(t)
			ctx := context.Background()
			for _, m := range []string{"a", "b", "c"} {
				if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
					Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m}}, "test"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0}, "test"); err != nil {
				t.Fatal(err)
			}
			agents := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
				switch {
				case node == "b" && orderKind(cmd) == "promote":
					return c.first(cmd)
				case node == "b" && orderKind(cmd) == "fence" && !c.fenceable:
					return nil
				}
				return &pgdrv1.CommandResult{Ok: true, Output: "promoted"}
			}}
			agents.start(t, s, "a", "b", "c")

			cl, _ := s.fsm.Cluster("main")
			s.executeFailover(ctx, cl, failover.Decision{Action: failover.ActionPromote, Candidate: "b", Reason: "a's lease expired"})
			cl, _ = s.fsm.Cluster("main")
			if cl.Primary != "b" || cl.Epoch != 2 {
				t.Fatalf("after the first failover: primary %s epoch %d", cl.Primary, cl.Epoch)
			}
			// b never became writable; its lease runs out and c is chosen.
			s.executeFailover(withForcedFailover(ctx, c.forced), cl, failover.Decision{Action: failover.ActionPromote, Candidate: "c", Reason: "b's lease expired"})
			got := agents.orders()
			if c.forced {
				if index(got, "c promote@3") < 0 {
					t.Fatalf("orders %v: a forced failover must promote c", got)
				}
				return
			}
			fence, promoteC := index(got, "b fence"), index(got, "c promote")
			if c.fenceable {
				if fence < 0 || promoteC < 0 || fence > promoteC || got[fence] != "b fence@2" {
					t.Fatalf("orders %v: want b fenced at the recorded epoch 2 before c is promoted", got)
				}
				return
			}
			if promoteC >= 0 {
				t.Fatalf("orders %v: c promoted while b's promotion may still complete and b could not be fenced", got)
			}
			if cl, _ := s.fsm.Cluster("main"); cl.Primary != "b" || cl.Epoch != 2 {
				t.Fatalf("waiting for b: the primary moved to %s at epoch %d", cl.Primary, cl.Epoch)
			}
		})
	}
}

// TestUnsettledPromote: which recorded primaries may still complete a
// promotion, by the newest failover or switchover intent or result.
func TestUnsettledPromote(t *testing.T) {
	for _, c := range []struct {
		n      int
		what   string
		events []*pgdrv1.HistoryEvent
		want   string
	}{
		{1, "no history", nil, ""},
		{2, "failover done", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "done: b is primary at epoch 3"}}, ""},
		{3, "failover result: promote unsettled", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Details: map[string]string{detailPromote: promoteUnsettled}}}, "b"},
		{4, "manual failover result: promote unsettled", []*pgdrv1.HistoryEvent{
			{Kind: kindManualIntent, Node: "b", Epoch: 2},
			{Kind: kindManualResult, Node: "b", Epoch: 3, Details: map[string]string{detailPromote: promoteUnsettled}}}, "b"},
		{5, "intent without a result after the new primary was recorded", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2}}, "b"},
		{6, "intent of an older epoch", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 1}}, ""},
		{7, "switchover failed after recording b", []*pgdrv1.HistoryEvent{
			{Kind: kindSwitchoverIntent, Node: "b", Epoch: 2},
			{Kind: kindSwitchoverResult, Node: "b", Epoch: 3, Details: map[string]string{"result": "failed"}}}, "b"},
		{8, "switchover done", []*pgdrv1.HistoryEvent{
			{Kind: kindSwitchoverIntent, Node: "b", Epoch: 2},
			{Kind: kindSwitchoverResult, Node: "b", Epoch: 3, Details: map[string]string{"result": "ok"}}}, ""},
		{9, "definite failure (not sent)", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "failed: promote: no open command stream"}}, ""},
		{10, "switchover-result under a resumed failover: promote unsettled (review D1)", []*pgdrv1.HistoryEvent{
			{Kind: kindSwitchoverIntent, Node: "b", Epoch: 2},
			{Kind: kindSwitchoverResult, Node: "b", Epoch: 3, Message: "pending: promote: promotion pending", Details: map[string]string{detailPromote: promoteUnsettled}}}, "b"},
		{11, "pending, then a retry refused for its epoch (review D2)", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: fsm.KindPrimarySet, Node: "b", Epoch: 3},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "pending: promote: promotion pending", Details: map[string]string{detailPromote: promoteUnsettled}},
			{Kind: kindPromoteRetry, Node: "b", Epoch: 3},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "failed: promote: the coordinator leader did not confirm the epoch"}}, "b"},
		{12, "pending, then a retry not sent (review D2)", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Details: map[string]string{detailPromote: promoteUnsettled}},
			{Kind: kindPromoteRetry, Node: "b", Epoch: 3},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "failed: promote: the agent of b: no open command stream"}}, "b"},
		{13, "pending, then a retry done", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Details: map[string]string{detailPromote: promoteUnsettled}},
			{Kind: kindPromoteRetry, Node: "b", Epoch: 3},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "done: b is primary at epoch 3"}}, ""},
		{14, "pending, then fenced", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Details: map[string]string{detailPromote: promoteUnsettled}},
			{Kind: kindPromoteSettled, Node: "b", Epoch: 3}}, ""},
		{15, "a retry with no result (a leader died)", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Message: "failed: promote: refusing to promote: this node is fenced"},
			{Kind: kindPromoteRetry, Node: "b", Epoch: 3}}, "b"},
		{16, "events of other members after an unsettled promote", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverIntent, Node: "b", Epoch: 2},
			{Kind: kindFailoverResult, Node: "b", Epoch: 3, Details: map[string]string{detailPromote: promoteUnsettled}},
			{Kind: kindFailoverIntent, Node: "c", Epoch: 3}}, "b"},
	} {
		f := fsm.New(nil, fsm.Options{})
		s := &Server{fsm: f}
		for i, ev := range c.events {
			ev.Cluster = "main"
			cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: ev}, "coordinator:test", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			b, err := fsm.Encode(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if res, _ := f.Apply(&raft.Log{Index: uint64(i + 1), Data: b}).(*pgdrv1.ApplyResult); res.GetError() != "" {
				t.Fatalf("#%d apply: %s", c.n, res.GetError())
			}
		}
		if got := s.unsettledPromote(&pgdrv1.Cluster{Name: "main", Primary: "b", Epoch: 3}); got != c.want {
			t.Errorf("#%d %s: %q, want %q", c.n, c.what, got, c.want)
		}
	}
}

func TestPromoteOutcome(t *testing.T) {
	for _, c := range []struct {
		what      string
		res       *pgdrv1.CommandResult
		err       error
		unsettled bool
	}{
		{"ok", &pgdrv1.CommandResult{Ok: true}, nil, false},
		{"pending", &pgdrv1.CommandResult{Pending: true, Error: "promotion pending"}, nil, true},
		{"no answer", nil, fmt.Errorf("no answer from the agent of b: %w", context.DeadlineExceeded), true},
		{"not sent", nil, fmt.Errorf("the agent of b: %w", errNoStream), false},
		{"refused", &pgdrv1.CommandResult{Error: "refusing to promote: this node is fenced"}, nil, false},
		{"an older agent's unfinished pg_promote", &pgdrv1.CommandResult{Error: "pg_promote did not finish within 1m0s"}, nil, true},
	} {
		msg, unsettled := promoteOutcome(c.res, c.err)
		if unsettled != c.unsettled || (c.what == "ok") != (msg == "") {
			t.Errorf("%s: %q unsettled=%v, want unsettled=%v", c.what, msg, unsettled, c.unsettled)
		}
	}
}

// TestSyncBeforePromoteRecordFails: review D4. In synchronous mode the
// standbys the new primary waits for are recorded before it is told them;
// when that record fails (here: the epoch moved), the promotion step stops
// with an error and the candidate is not told anything. A new primary
// acknowledging commits that the recorded set does not know of could lose
// them at the next failover.
func TestSyncBeforePromoteRecordFails(t *testing.T) {
	s := testLeader(t)
	ctx := context.Background()
	for _, m := range []string{"a", "b", "c"} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0}, "test"); err != nil {
		t.Fatal(err)
	}
	agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
	agents.start(t, s, "a", "b", "c")
	cl, _ := s.fsm.Cluster("main")
	cl.Policy = &pgdrv1.Policy{Synchronous: "on"}
	// The recorded epoch is 1; recording at 5 is refused by the FSM.
	err := s.syncBeforePromote(ctx, cl, "b", 5)
	if err == nil {
		t.Fatalf("syncBeforePromote carried on after recording the synchronous standbys failed; orders %v", agents.orders())
	}
	if got := agents.orders(); len(got) != 0 {
		t.Fatalf("orders %v sent after recording the synchronous standbys failed (%v)", got, err)
	}
	if !strings.Contains(err.Error(), "epoch mismatch") {
		t.Errorf("error does not say why: %v", err)
	}
}
