package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRejoinReplicaThatMissedFailover: the loss of a whole region takes a
// replica down with the primary; the failover's order to it to follow the
// new primary fails. When its agent is back (PostgreSQL still stopped),
// the leader orders it to rejoin — it would otherwise stay stopped, or come
// back streaming from a primary that is gone. A stopped replica whose
// follow succeeded (or that rejoined since) is left alone.
func TestRejoinReplicaThatMissedFailover(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []*pgdrv1.HistoryEvent
		want   bool
	}{
		{"its follow failed", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverStep, Node: "c", Details: map[string]string{"step": stepFollow, "result": "failed"}}}, true},
		{"its follow succeeded", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverStep, Node: "c", Details: map[string]string{"step": stepFollow, "result": "ok"}}}, false},
		{"it rejoined since", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverStep, Node: "c", Details: map[string]string{"step": stepFollow, "result": "failed"}},
			{Kind: kindRejoin, Node: "c", Details: map[string]string{"result": "ok"}}}, false},
		{"another member's follow failed", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverStep, Node: "a", Details: map[string]string{"step": stepFollow, "result": "failed"}}}, false},
		{"an older leader's step without details", []*pgdrv1.HistoryEvent{
			{Kind: kindFailoverStep, Node: "c", Message: "c could not follow b"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testLeader(t)
			ctx := context.Background()
			for _, m := range []string{"a", "b", "c"} {
				if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
					Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m}}, "test"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "b"}, "test"); err != nil {
				t.Fatal(err)
			}
			for _, ev := range tc.events {
				ev.Cluster, ev.Epoch = "main", 1
				if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: ev}, "test"); err != nil {
					t.Fatal(err)
				}
			}
			agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
			agents.start(t, s, "a", "b", "c")
			now := time.Now()
			samples := map[memberKey]sample{
				{"main", "b"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true}, at: now},
				{"main", "c"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "c"}, at: now}, // stopped
			}
			cl, _ := s.fsm.Cluster("main")
			s.rejoinTick(ctx, cl, samples, now)
			// The tick decides synchronously (noting when it ordered c) and
			// sends the order in the background.
			s.judge.mu.Lock()
			ordered := !s.judge.rejoins[memberKey{"main", "c"}].IsZero()
			s.judge.mu.Unlock()
			if ordered != tc.want {
				t.Fatalf("c ordered to rejoin: %v, want %v", ordered, tc.want)
			}
			if !tc.want {
				return
			}
			testutil.WaitFor(t, 10*time.Second, "c ordered to rejoin", func() (bool, error) {
				o := agents.orders()
				return len(o) == 1 && strings.HasPrefix(o[0], "c "), nil
			})
		})
	}
}

// TestNoRejoinWhilePaused: in maintenance mode (the cluster paused) the
// leader orders no member to rejoin — not a stopped replica whose failover
// follow failed (the operator may have stopped it on purpose), not a
// fenced or writable one — as it re-points none (followTick).
func TestNoRejoinWhilePaused(t *testing.T) {
	s := testLeader(t)
	ctx := context.Background()
	for _, m := range []string{"a", "b", "c", "d"} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct {
		t   pgdrv1.CommandType
		msg proto.Message
	}{
		{pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "b"}},
		{pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Cluster: "main", Epoch: 1,
			Kind: kindFailoverStep, Node: "c", Details: map[string]string{"step": stepFollow, "result": "failed"}}}},
		{pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "maintenance"}},
	} {
		if _, err := s.propose(ctx, p.t, p.msg, "test"); err != nil {
			t.Fatal(err)
		}
	}
	agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
	agents.start(t, s, "a", "b", "c", "d")
	now := time.Now()
	samples := map[memberKey]sample{
		{"main", "b"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true}, at: now},
		{"main", "c"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "c"}, at: now}, // stopped, missed the follow
		{"main", "a"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "a", PostmasterAlive: true, Fenced: true}, at: now},
		{"main", "d"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "d", PostmasterAlive: true, Connectable: true}, at: now},
	}
	cl, _ := s.fsm.Cluster("main")
	if !cl.GetPolicy().GetPaused() {
		t.Fatal("cluster not paused")
	}
	s.rejoinTick(ctx, cl, samples, now)
	s.judge.mu.Lock()
	ordered := len(s.judge.rejoins)
	s.judge.mu.Unlock()
	if ordered != 0 || len(agents.orders()) != 0 {
		t.Fatalf("while paused: %d members ordered to rejoin (%v), want none", ordered, agents.orders())
	}
}
