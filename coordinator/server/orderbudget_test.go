package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestStampSent: review D8, the leader's side. An order leaves with the
// leader's clock at sending and, when it has a deadline, the budget left
// before it, so that the agent counts the budget from the receipt on its
// own monotonic clock instead of comparing the leader's absolute deadline
// with its wall clock. The absolute deadline stays for older agents.
func TestStampSent(t *testing.T) {
	now := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		deadline time.Time
		budgetMs int64
	}{
		{"no deadline", time.Time{}, 0},
		{"60s left", now.Add(time.Minute), 60000},
		{"sub-millisecond rest rounds down", now.Add(1500*time.Millisecond + 700*time.Microsecond), 1500},
		{"expired before it was sent", now.Add(-2 * time.Second), -2000},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := &pgdrv1.AgentCommand{Id: "x", Epoch: 3, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
			if !c.deadline.IsZero() {
				cmd.Deadline = timestamppb.New(c.deadline)
			}
			out := stampSent(cmd, now, "c1")
			if cmd.SentAt != nil || cmd.BudgetMs != 0 {
				t.Fatalf("stampSent changed the caller's order: %v", cmd)
			}
			if !out.GetSentAt().AsTime().Equal(now) || out.GetBudgetMs() != c.budgetMs || out.GetSender() != "c1" {
				t.Fatalf("sent_at %v budget_ms %d; want %v and %d", out.GetSentAt().AsTime(), out.GetBudgetMs(), now, c.budgetMs)
			}
			if c.deadline.IsZero() != (out.GetDeadline() == nil) || out.GetId() != "x" || out.GetEpoch() != 3 {
				t.Fatalf("the order's other fields changed: %v", out)
			}
		})
	}
}

// TestEpochAnswersLeaderClock: review D8. The Epoch answer an agent asks
// for right before pg_promote carries the leader's clock, read after the
// barrier, so that the agent checks the order's deadline on it.
func TestEpochAnswersLeaderClock(t *testing.T) {
	s := testLeader(t)
	ctx := context.Background()
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "a", Cluster: "main", Region: "r1", Dsn: "host=a"}}, "test"); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	resp, err := (&agentAPI{s: s}).Epoch(ctx, &pgdrv1.EpochRequest{Cluster: "main", Node: "a"})
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetNow() == nil {
		t.Fatalf("the Epoch answer carries no leader clock: %v", resp)
	}
	if n := resp.GetNow().AsTime(); n.Before(before.Truncate(time.Microsecond)) || n.After(after) {
		t.Fatalf("leader clock %v outside the call [%v, %v]", n, before, after)
	}
}

// TestEpochAnswersCommandLeft: adversarial review of D8, finding 3. The
// Epoch answer carries the time the leader still waits for the order the
// agent asks about, measured on the leader's monotonic clock (ctx's
// deadline in hub.call), so that a step of the leader's wall clock does
// not extend it; an order it does not wait for, or one sent to another
// member, is not known.
func TestEpochAnswersCommandLeft(t *testing.T) {
	s := testLeader(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: n, Cluster: "main", Region: "r1", Dsn: "host=" + n}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	k := memberKey{"main", "a"}
	stream := s.hub.open(k)
	defer s.hub.close(k, stream)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	go s.hub.call(cctx, k, &pgdrv1.AgentCommand{Id: "cmd-1", Cluster: "main", Node: "a", Epoch: 1,
		Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{}}})
	<-stream // sent
	api := &agentAPI{s: s}
	resp, err := api.Epoch(ctx, &pgdrv1.EpochRequest{Cluster: "main", Node: "a", CommandId: "cmd-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetCommandWaiting() || resp.GetCommandLeftMs() <= 15000 || resp.GetCommandLeftMs() > 20000 || resp.GetLeader() != s.cfg.Name || s.cfg.Name == "" {
		t.Fatalf("the Epoch answer for an order waited for 20s: waiting %t, %d ms left, leader %q (this coordinator: %q)", resp.GetCommandWaiting(), resp.GetCommandLeftMs(), resp.GetLeader(), s.cfg.Name)
	}
	for _, req := range []*pgdrv1.EpochRequest{
		{Cluster: "main", Node: "a", CommandId: "cmd-2"},
		{Cluster: "main", Node: "b", CommandId: "cmd-1"},
		{Cluster: "main", Node: "a"},
	} {
		resp, err := api.Epoch(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetCommandWaiting() || resp.GetCommandLeftMs() != 0 {
			t.Fatalf("%v: waiting %t, %d ms left; want not known", req, resp.GetCommandWaiting(), resp.GetCommandLeftMs())
		}
	}
}

// TestStampBudgetFromWaiter: review 3/6. The budget an order carries is
// what the leader's waiter has left on the monotonic clock, not the
// order's wall-clock deadline less the wall clock: a step of the leader's
// wall clock between the call and the sending does not change it.
func TestStampBudgetFromWaiter(t *testing.T) {
	h := newHub()
	k := memberKey{"main", "b"}
	ch := h.open(k)
	defer h.close(k, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := &pgdrv1.AgentCommand{Id: "p1", Cluster: "main", Node: "b", Epoch: 3, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	go func() { _, _ = h.call(ctx, k, cmd) }()
	var sent *pgdrv1.AgentCommand
	select {
	case sent = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the order was not queued")
	}
	// The wall clock stepped an hour back since the deadline was taken:
	// the order's wall-clock deadline is an hour past the wall clock's
	// reading now; the waiter's monotonic deadline is not.
	sent = proto.Clone(sent).(*pgdrv1.AgentCommand)
	sent.Deadline = timestamppb.New(sent.GetDeadline().AsTime().Add(time.Hour))
	out := h.stamp(k, sent, time.Now(), "c1")
	if b := out.GetBudgetMs(); b > 10000 || b < 8000 {
		t.Fatalf("budget_ms %d, want about 10000 (the waiter's monotonic deadline), whatever the wall clock", b)
	}
}
