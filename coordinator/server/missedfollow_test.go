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

// TestRejoinNotRepeatedWhileRunningAndBacksOff: a member's rejoin order is
// not sent again while the previous one is still running (a pg_rewind
// takes minutes; rejoinInterval is 30s), and after failed rejoins the
// next order waits twice as long each time: a member that cannot rejoin
// does not write two history events (decisions, never evicted before
// failovers) every 30 seconds for ever.
func TestRejoinNotRepeatedWhileRunningAndBacksOff(t *testing.T) {
	// samples: b the healthy primary, c stopped, both reported at.
	samples := func(at time.Time) map[memberKey]sample {
		return map[memberKey]sample{
			{"main", "b"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true}, at: at},
			{"main", "c"}: {report: &pgdrv1.HealthReport{Cluster: "main", Node: "c"}, at: at},
		}
	}
	setup := func(t *testing.T, answer func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult) (*Server, *pgdrv1.Cluster, *fakeAgents) {
		s := testLeader(t)
		ctx := context.Background()
		for _, m := range []string{"b", "c"} {
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
		} {
			if _, err := s.propose(ctx, p.t, p.msg, "test"); err != nil {
				t.Fatal(err)
			}
		}
		agents := &fakeAgents{answer: answer}
		agents.start(t, s, "b", "c")
		cl, _ := s.fsm.Cluster("main")
		return s, cl, agents
	}
	orderedAt := func(s *Server) time.Time {
		s.judge.mu.Lock()
		defer s.judge.mu.Unlock()
		return s.judge.rejoins[memberKey{"main", "c"}]
	}
	t.Run("running", func(t *testing.T) {
		s, cl, agents := setup(t, func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return nil }) // never answers
		now := time.Now()
		s.rejoinTick(t.Context(), cl, samples(now), now)
		testutil.WaitFor(t, 10*time.Second, "c ordered to rejoin", func() (bool, error) { return len(agents.orders()) == 1, nil })
		s.rejoinTick(t.Context(), cl, samples(now.Add(rejoinInterval+time.Second)), now.Add(rejoinInterval+time.Second))
		if got := orderedAt(s); !got.Equal(now) {
			t.Fatalf("ordered again at %v while the first rejoin runs", got.Sub(now))
		}
	})
	t.Run("failing", func(t *testing.T) {
		s, cl, _ := setup(t, func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
			return &pgdrv1.CommandResult{Error: "pg_rewind: could not find common ancestor"}
		})
		now := time.Now()
		at := now
		for i := range 3 {
			s.rejoinTick(t.Context(), cl, samples(at), at)
			if got := orderedAt(s); !got.Equal(at) {
				t.Fatalf("order %d not sent at +%v", i+1, at.Sub(now))
			}
			testutil.WaitFor(t, 10*time.Second, "the failed rejoin recorded", func() (bool, error) {
				n := 0
				for _, ev := range s.clusterEventsAll("main") {
					if ev.GetKind() == kindRejoin && ev.GetDetails()["result"] == "failed" {
						n++
					}
				}
				return n == i+1, nil
			})
			testutil.WaitFor(t, 10*time.Second, "the rejoin no longer running", func() (bool, error) {
				s.judge.mu.Lock()
				defer s.judge.mu.Unlock()
				return !s.judge.rejoinBusy[memberKey{"main", "c"}], nil
			})
			wait := rejoinInterval << (i + 1)
			s.rejoinTick(t.Context(), cl, samples(at.Add(wait-time.Second)), at.Add(wait-time.Second))
			if got := orderedAt(s); !got.Equal(at) {
				t.Fatalf("after %d failed rejoins, ordered again %v later; want %v", i+1, got.Sub(at), wait)
			}
			at = at.Add(wait)
		}
	})
}

// clusterEventsAll are all of cluster's history events.
func (s *Server) clusterEventsAll(cluster string) []*pgdrv1.HistoryEvent {
	var out []*pgdrv1.HistoryEvent
	s.fsm.ScanHistory(cluster, func(ev *pgdrv1.HistoryEvent) { out = append(out, ev) })
	return out
}
