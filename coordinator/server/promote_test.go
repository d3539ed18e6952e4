package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// testLeader is a Server leading a one-voter in-memory Raft cluster, with
// the failover settings tests need; no gRPC, no gossip.
func testLeader(t *testing.T) *Server {
	t.Helper()
	return testLeaderWith(t, fsm.Options{})
}

// testLeaderWith is testLeader with the given FSM options.
func testLeaderWith(t *testing.T, opts fsm.Options) *Server {
	t.Helper()
	cfg := &config.Config{Name: "c1"}
	cfg.Failover.CommandTimeout.Duration = 2 * time.Second
	cfg.Failover.LeaseTTL.Duration = time.Nanosecond // leases expire at once
	cfg.Health.StaleAfter.Duration = 10 * time.Second
	log := slog.New(slog.DiscardHandler)
	s := &Server{cfg: cfg, log: log, view: newView(), hub: newHub(), leases: newLeases(), judge: newJudgements(), syncer: newSyncer(), primaryLSN: newPrimaryLSNs()}
	s.fsm = fsm.New(log, opts)
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
	ids    []string // "node kind id", in arrival order
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
					f.ids = append(f.ids, n+" "+orderKind(c)+" "+c.GetId())
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

// lastID is the id of the last order of kind (orderKind) node received
// ("" when none).
func (f *fakeAgents) lastID(node, kind string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.ids) - 1; i >= 0; i-- {
		if rest, ok := strings.CutPrefix(f.ids[i], node+" "+kind+" "); ok {
			return rest
		}
	}
	return ""
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

// TestUnsettledPromoteSurvivesEviction: review D7. Whether the recorded
// primary's promotion may still complete, and whether it was promoted at
// all, must not depend on events the bounded history has evicted: b
// answered "pending", then enough decisions about other members evict the
// failover's events; b's promotion is still unsettled (and not promoted),
// so c is not promoted without fencing b first.
func TestUnsettledPromoteSurvivesEviction(t *testing.T) {
	s := testLeaderWith(t, fsm.Options{HistoryLimit: 8})
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
		if node == "b" && orderKind(cmd) == "promote" {
			return &pgdrv1.CommandResult{Pending: true, Error: "promotion pending: pg_promote did not finish within 55s"}
		}
		return &pgdrv1.CommandResult{Ok: true, Output: "promoted"}
	}}
	agents.start(t, s, "a", "b", "c")
	cl, _ := s.fsm.Cluster("main")
	s.executeFailover(ctx, cl, failover.Decision{Action: failover.ActionPromote, Candidate: "b", Reason: "a's lease expired"})
	cl, _ = s.fsm.Cluster("main")
	if cl.Primary != "b" || cl.Epoch != 2 || s.unsettledPromote(cl) != "b" {
		t.Fatalf("after the first failover: primary %s epoch %d unsettled %q", cl.Primary, cl.Epoch, s.unsettledPromote(cl))
	}
	for i := range 20 {
		s.recordEvent(ctx, "main", kindFailoverRefused, "c", cl.Epoch, fmt.Sprintf("decision %d about c", i), nil)
	}
	s.fsm.ScanHistory("main", func(ev *pgdrv1.HistoryEvent) {
		if ev.GetNode() == "b" {
			t.Fatalf("the history still holds %s %q: the test evicts nothing", ev.GetKind(), ev.GetMessage())
		}
	})
	if got := s.unsettledPromote(cl); got != "b" {
		t.Errorf("unsettledPromote after the history evicted b's failover = %q, want \"b\"", got)
	}
	if s.primaryPromoted(cl) {
		t.Errorf("primaryPromoted after the history evicted b's failover = true, want false (b never confirmed it)")
	}
}

// TestUnsettledPromote: which recorded primaries may still complete a
// promotion, and which were promoted, by the replicated state that
// SetPrimary and the promote marks of recorded events keep (b recorded at
// epoch 2 with a promote order unless the case says otherwise).
func TestUnsettledPromote(t *testing.T) {
	type mark struct {
		node  string
		epoch uint64
		m     pgdrv1.PromoteMark
	}
	const (
		ordered   = pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED
		unsettled = pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED
		notSent   = pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT
		settled   = pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED
		promoted  = pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED
	)
	for _, c := range []struct {
		n            int
		what         string
		writable     bool // b recorded without a promote order (an initial primary)
		marks        []mark
		want         string
		wantPromoted bool
	}{
		{1, "recorded writable (initial primary)", true, nil, "", true},
		{2, "recorded, no outcome (a leader died before the order's result)", false, nil, "b", false},
		{3, "promoted", false, []mark{{"b", 2, promoted}}, "", true},
		{4, "answered pending or not at all", false, []mark{{"b", 2, unsettled}}, "b", false},
		{5, "definite failure (not sent)", false, []mark{{"b", 2, notSent}}, "", false},
		{6, "pending, then a retry refused for its epoch (review D2)", false, []mark{{"b", 2, unsettled}, {"b", 2, ordered}, {"b", 2, notSent}}, "b", false},
		{7, "pending, then a retry done", false, []mark{{"b", 2, unsettled}, {"b", 2, ordered}, {"b", 2, promoted}}, "", true},
		{8, "pending, then fenced", false, []mark{{"b", 2, unsettled}, {"b", 2, settled}}, "", false},
		{9, "not sent, then a retry with no result (a leader died)", false, []mark{{"b", 2, notSent}, {"b", 2, ordered}}, "b", false},
		{10, "marks of another member or epoch change nothing", false, []mark{{"b", 2, unsettled}, {"c", 2, promoted}, {"b", 1, promoted}, {"b", 3, settled}}, "b", false},
		{11, "a retry of a primary recorded writable", true, []mark{{"b", 2, ordered}}, "b", false},
	} {
		f := fsm.New(nil, fsm.Options{})
		s := &Server{fsm: f}
		apply := func(typ pgdrv1.CommandType, payload proto.Message) {
			cmd, err := fsm.NewCommand(typ, payload, "coordinator:test", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			b, err := fsm.Encode(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if res, _ := f.Apply(&raft.Log{Index: f.LastIndex() + 1, Data: b}).(*pgdrv1.ApplyResult); !res.GetOk() {
				t.Fatalf("#%d apply %s: %s", c.n, typ, res.GetError())
			}
		}
		for _, m := range []string{"a", "b", "c"} {
			apply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Name: m, Cluster: "main", Region: "r1"}})
		}
		apply(pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a"})
		apply(pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: !c.writable})
		for _, m := range c.marks {
			apply(pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
				Cluster: "main", Kind: kindFailoverStep, Node: m.node, Epoch: m.epoch}, Promote: m.m})
		}
		cl, _ := f.Cluster("main")
		if got := s.unsettledPromote(cl); got != c.want {
			t.Errorf("#%d %s: unsettled %q, want %q", c.n, c.what, got, c.want)
		}
		if got := s.primaryPromoted(cl); got != c.wantPromoted {
			t.Errorf("#%d %s: promoted %v, want %v", c.n, c.what, got, c.wantPromoted)
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

// unsettledCluster is cluster main with a, b and c (b's agent honours
// settle_by when honours), a recorded at epoch 1, then b recorded at epoch
// 2 with a promote order that was answered pending with settleBy.
func unsettledCluster(t *testing.T, s *Server, honours bool, settleBy time.Time) *pgdrv1.Cluster {
	t.Helper()
	return unsettledClusterWindow(t, s, honours, settleBy, 0)
}

// unsettledClusterWindow is unsettledCluster whose order carried the
// settle window window (0: none) besides settleBy.
func unsettledClusterWindow(t *testing.T, s *Server, honours bool, settleBy time.Time, window time.Duration) *pgdrv1.Cluster {
	t.Helper()
	ctx := context.Background()
	for _, m := range []string{"a", "b", "c"} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m, HonoursSettleBy: honours && m == "b"}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*pgdrv1.SetPrimary{{Cluster: "main", Name: "a"}, {Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true}} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, p, "test"); err != nil {
			t.Fatal(err)
		}
	}
	ev := &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Cluster: "main", Kind: kindFailoverResult, Node: "b", Epoch: 2, Message: "pending: promote: promotion pending"},
		Promote: pgdrv1.PromoteMark_PROMOTE_MARK_UNSETTLED, SettleAfterMs: uint64(window.Milliseconds()), HonoursSettle: honours}
	if !settleBy.IsZero() {
		ev.SettleBy = timestamppb.New(settleBy)
	}
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, ev, "test"); err != nil {
		t.Fatal(err)
	}
	cl, _ := s.fsm.Cluster("main")
	if s.unsettledPromote(cl) != "b" {
		t.Fatalf("b's promotion is not unsettled: %v", cl.GetUnsettledPromote())
	}
	return cl
}

// TestSettleNeedsStoppedNotJustFenced: review D11. The fence marker is
// written before PostgreSQL is stopped, so a report "fenced" from a
// server still running writable does not settle an unsettled promotion:
// the leader fences the node first.
func TestSettleNeedsStoppedNotJustFenced(t *testing.T) {
	s := testLeader(t)
	cl := unsettledCluster(t, s, false, time.Time{})
	agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
		return &pgdrv1.CommandResult{Ok: true}
	}}
	agents.start(t, s, "a", "b", "c")
	s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true, Fenced: true}, time.Now(), time.Now())
	done, wait := s.settlePromote(context.Background(), cl, "c")
	if wait != "" || index(agents.orders(), "b fence@2") < 0 {
		t.Fatalf("orders %v, done %q, wait %q: b, fenced but still running writable, must be fenced before c is promoted", agents.orders(), done, wait)
	}
	// Fenced and still in recovery (a fence whose stop failed: the pending
	// promotion can still complete), or a postmaster not seen while the
	// server answers: fenced first (review A).
	for _, r := range []*pgdrv1.HealthReport{
		{Cluster: "main", Node: "b", PostmasterAlive: true, Connectable: true, InRecovery: true, Fenced: true},
		{Cluster: "main", Node: "b", Connectable: true, InRecovery: true},
		// Running, its recovery state unknown (pg_is_in_recovery timed
		// out) and its postmaster hidden (a sidecar without a shared PID
		// namespace): not stopped.
		{Cluster: "main", Node: "b", Connectable: true, RecoveryUnknown: true},
	} {
		s := testLeader(t)
		cl := unsettledCluster(t, s, false, time.Time{})
		// Caught up before the report: a report that counted as stopped
		// would settle (the stopped rule needs the order's start).
		leaderCaughtUp(s, time.Now().Add(-time.Second))
		agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
		agents.start(t, s, "a", "b", "c")
		s.ingestReport(r, time.Now()) // as the report stream stores it
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || index(agents.orders(), "b fence@2") < 0 {
			t.Fatalf("report %v: orders %v, done %q, wait %q: want b fenced first", r, agents.orders(), done, wait)
		}
	}
	// Stopped (no postmaster, not connectable), fenced or not, and sampled
	// after a command sent after the catch-up (review 4): settled without
	// another order.
	for _, r := range []*pgdrv1.HealthReport{
		{Cluster: "main", Node: "b", Fenced: true},
		{Cluster: "main", Node: "b"},
	} {
		s := testLeader(t)
		cl := unsettledCluster(t, s, false, time.Time{})
		leaderCaughtUp(s, time.Now().Add(-time.Second))
		agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
		agents.start(t, s, "a", "b", "c")
		r.AfterCommandId = sendPing(t, s, "b")
		s.ingestReport(r, time.Now())
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || done == "" || index(agents.orders(), "b fence") >= 0 {
			t.Fatalf("report %v: orders %v, done %q, wait %q: want settled without an order", r, agents.orders(), done, wait)
		}
	}
	// Stopped, but sampled before the order's window start (review 3/2):
	// the server may have been restarted since; fenced first.
	{
		s := testLeader(t)
		cl := unsettledCluster(t, s, false, time.Time{})
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "b"}, time.Now(), time.Now())
		leaderCaughtUp(s, time.Now().Add(time.Millisecond))
		agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
		agents.start(t, s, "a", "b", "c")
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || index(agents.orders(), "b fence@2") < 0 {
			t.Fatalf("stopped report from before the order: orders %v, done %q, wait %q: want b fenced first", agents.orders(), done, wait)
		}
	}
}

// TestSettleStoppedSampledAfterOrder: review 4. A report that PostgreSQL
// is stopped settles an unsettled promotion only when it was sampled after
// the last order to the node went out, which the leader knows only from
// the command the report echoes (after_command_id: the latest the agent
// had received before its checks began), when it sent that command
// itself. The agent sends its cached latest report when a new session
// opens: received after this leader caught up, sampled before, when the
// server may since have been started and its promotion completed.
func TestSettleStoppedSampledAfterOrder(t *testing.T) {
	ok := func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }
	// The cached report from before the new leader's catch-up, echoing no
	// command (an older agent), or one of the previous leader's.
	for _, echo := range []string{"", "0123456789abcdef"} {
		s := testLeader(t)
		cl := unsettledCluster(t, s, false, time.Time{})
		leaderCaughtUp(s, time.Now())
		agents := &fakeAgents{answer: ok}
		agents.start(t, s, "a", "b", "c")
		s.ingestReport(&pgdrv1.HealthReport{Cluster: "main", Node: "b", AfterCommandId: echo}, time.Now()) // on b's new session
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || index(agents.orders(), "b fence@2") < 0 {
			t.Fatalf("stopped report echoing %q, received after the catch-up: orders %v, done %q, wait %q: want b fenced first (it may have been sampled before)",
				echo, agents.orders(), done, wait)
		}
	}
	// Sampled after a command this leader sent after its catch-up: settled
	// without an order.
	{
		s := testLeader(t)
		cl := unsettledCluster(t, s, false, time.Time{})
		leaderCaughtUp(s, time.Now())
		agents := &fakeAgents{answer: ok}
		agents.start(t, s, "a", "b", "c")
		id := sendPing(t, s, "b")
		s.ingestReport(&pgdrv1.HealthReport{Cluster: "main", Node: "b", AfterCommandId: id}, time.Now())
		// The fake agent notes the ping itself asynchronously: only a fence
		// would be an order here.
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || done == "" || index(agents.orders(), "b fence") >= 0 {
			t.Fatalf("stopped report sampled after the ping: orders %v, done %q, wait %q: want settled without an order", agents.orders(), done, wait)
		}
	}
	// A command sent before the catch-up (before Since) proves nothing.
	{
		s := testLeader(t)
		cl := unsettledCluster(t, s, false, time.Time{})
		agents := &fakeAgents{answer: ok}
		agents.start(t, s, "a", "b", "c")
		id := sendPing(t, s, "b")
		leaderCaughtUp(s, time.Now().Add(time.Millisecond))
		s.ingestReport(&pgdrv1.HealthReport{Cluster: "main", Node: "b", AfterCommandId: id}, time.Now().Add(time.Second))
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || index(agents.orders(), "b fence@2") < 0 {
			t.Fatalf("stopped report sampled after a ping sent before the catch-up: orders %v, done %q, wait %q: want b fenced first", agents.orders(), done, wait)
		}
	}
	// The fence whose call timed out but reached the agent: a later report
	// that echoes it and says stopped settles.
	{
		s := testLeader(t)
		s.cfg.Failover.CommandTimeout.Duration = 300 * time.Millisecond
		cl := unsettledCluster(t, s, false, time.Time{})
		leaderCaughtUp(s, time.Now())
		agents := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
			if node == "b" {
				return nil // received, never answered
			}
			return &pgdrv1.CommandResult{Ok: true}
		}}
		agents.start(t, s, "a", "b", "c")
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait == "" {
			t.Fatalf("settled without an answer to the fence: %q", done)
		}
		fence := agents.lastID("b", "fence")
		if fence == "" {
			t.Fatalf("no fence sent to b: %v", agents.orders())
		}
		s.ingestReport(&pgdrv1.HealthReport{Cluster: "main", Node: "b", AfterCommandId: fence}, time.Now())
		if done, wait := s.settlePromote(context.Background(), cl, "c"); wait != "" || !strings.Contains(done, "stopped") {
			t.Fatalf("stopped report sampled after the fence: done %q, wait %q: want settled by the report", done, wait)
		}
	}
}

// sendPing sends a ping to node of cluster main on its command stream and
// returns its id.
func sendPing(t *testing.T, s *Server, node string) string {
	t.Helper()
	id := newCommandID()
	if !s.hub.send(memberKey{"main", node}, &pgdrv1.AgentCommand{Id: id, Cluster: "main", Node: node, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}) {
		t.Fatalf("no command stream to %s", node)
	}
	return id
}

// TestSettleAfterSettleDeadline: review D10. A candidate whose promotion
// is unsettled and whose host is gone (no answer to the fence) no longer
// blocks failover once the settle deadline its agent promised to keep has
// passed (plus the safety margin); without that promise (an agent that
// does not honour settle_by) the leader waits, and says that only
// 'pgdrctl failover --force' goes on.
func TestSettleAfterSettleDeadline(t *testing.T) {
	for _, c := range []struct {
		what      string
		honours   bool
		sentAgo   time.Duration // the order went out this long ago on the leader's monotonic clock
		window    time.Duration // 0: none
		wantWait  bool
		wantInMsg string
	}{
		{"honoured, deadline passed", true, 2 * time.Minute, time.Minute, false, "settle deadline"},
		{"honoured, deadline ahead", true, 0, time.Minute, true, "drops the promotion unless confirmed"},
		{"not honoured", false, 2 * time.Minute, time.Minute, true, "pgdrctl failover --force"},
		{"no deadline", true, 2 * time.Minute, 0, true, "pgdrctl failover --force"},
	} {
		t.Run(c.what, func(t *testing.T) {
			s := testLeader(t)
			s.cfg.Failover.CommandTimeout.Duration = 300 * time.Millisecond
			s.cfg.Failover.SafetyMargin.Duration = time.Second
			var settleBy time.Time
			if c.window != 0 {
				settleBy = time.Now().Add(c.window - c.sentAgo)
			}
			cl := unsettledClusterWindow(t, s, c.honours, settleBy, c.window)
			leaderCaughtUp(s, time.Now().Add(-c.sentAgo))
			agents := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
				if node == "b" {
					return nil // its host is gone
				}
				return &pgdrv1.CommandResult{Ok: true}
			}}
			agents.start(t, s, "a", "b", "c")
			done, wait := s.settlePromote(context.Background(), cl, "c")
			msg := done
			if c.wantWait {
				msg = wait
			}
			if (wait != "") != c.wantWait || !strings.Contains(msg, c.wantInMsg) {
				t.Fatalf("done %q, wait %q: want wait=%v with %q", done, wait, c.wantWait, c.wantInMsg)
			}
		})
	}
}

// leaderCaughtUp starts s's leadership term as caught up at at (a time
// with the monotonic reading).
func leaderCaughtUp(s *Server, at time.Time) { s.promoteClk.begin(at) }

// TestSettleWindowOnLeaderClock: review C of D10. The settle deadline
// counts on the leader's own monotonic clock: a new leader that inherits
// an unsettled promotion counts the whole window from its own catch-up,
// whatever settle_by an earlier leader (whose clock ran ahead) recorded;
// an order it sends itself restarts the count from after it went out.
func TestSettleWindowOnLeaderClock(t *testing.T) {
	const window = 3 * time.Second
	s := testLeader(t)
	s.cfg.Failover.CommandTimeout.Duration = 300 * time.Millisecond
	s.cfg.Failover.SafetyMargin.Duration = 500 * time.Millisecond
	// The previous leader's clock was a minute ahead: by its settle_by the
	// deadline passed long ago.
	cl := unsettledClusterWindow(t, s, true, time.Now().Add(-time.Minute), window)
	leaderCaughtUp(s, time.Now())
	agents := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
		if node == "b" {
			return nil // its host is gone
		}
		return &pgdrv1.CommandResult{Ok: true}
	}}
	agents.start(t, s, "a", "b", "c")
	start := time.Now()
	done, wait := s.settlePromote(context.Background(), cl, "c")
	if wait == "" {
		t.Fatalf("settled %s after this leader caught up, by another leader's settle_by: %q", time.Since(start), done)
	}
	// It settles once the window plus the margin has passed since the
	// catch-up, on this leader's clock.
	var settledAt time.Duration
	testutil.WaitFor(t, 20*time.Second, "the settle window to pass", func() (bool, error) {
		done, wait := s.settlePromote(context.Background(), cl, "c")
		if wait == "" {
			settledAt = time.Since(start)
			return strings.Contains(done, "settle deadline"), fmt.Errorf("done %q", done)
		}
		return false, errors.New(wait)
	})
	if settledAt < window+s.cfg.Failover.SafetyMargin.Duration {
		t.Fatalf("settled %s after the catch-up, before the window %s plus the margin", settledAt, window)
	}
	// An order this leader sends restarts the count.
	s2 := testLeader(t)
	s2.cfg.Failover.CommandTimeout.Duration = 300 * time.Millisecond
	s2.cfg.Failover.SafetyMargin.Duration = 500 * time.Millisecond
	cl2 := unsettledClusterWindow(t, s2, true, time.Time{}, window)
	leaderCaughtUp(s2, time.Now().Add(-time.Hour))
	agents2 := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
		if node == "b" {
			return nil
		}
		return &pgdrv1.CommandResult{Ok: true}
	}}
	agents2.start(t, s2, "a", "b", "c")
	s2.promoteClk.sent("main", "b", 2, time.Now())
	if done, wait := s2.settlePromote(context.Background(), cl2, "c"); wait == "" {
		t.Fatalf("settled right after this leader's own order went out: %q", done)
	}
	s2.promoteClk.sent("main", "b", 1, time.Now().Add(time.Hour)) // another epoch: not this promotion
	s2.promoteClk.sent("main", "b", 2, time.Now().Add(-time.Hour))
	if _, wait := s2.settlePromote(context.Background(), cl2, "c"); wait == "" {
		t.Fatal("an earlier order moved the count back")
	}
}

// TestSettleHonouredAsOrdered: review D. Whether the agent keeps settle
// deadlines is what it registered when the order went out, recorded with
// the order: a registration after it (a restarted agent with the watchdog
// turned on, or off) changes nothing for that order.
func TestSettleHonouredAsOrdered(t *testing.T) {
	for _, c := range []struct {
		what              string
		atOrder, nowAfter bool
		wantWait          bool
	}{
		{"did not honour when ordered, registers honouring after", false, true, true},
		{"honoured when ordered, registers without after", true, false, false},
	} {
		t.Run(c.what, func(t *testing.T) {
			s := testLeader(t)
			s.cfg.Failover.CommandTimeout.Duration = 300 * time.Millisecond
			s.cfg.Failover.SafetyMargin.Duration = time.Second
			cl := unsettledClusterWindow(t, s, c.atOrder, time.Now().Add(-time.Minute), time.Minute)
			if _, err := s.propose(context.Background(), pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
				Name: "b", Cluster: "main", Region: "r1", Dsn: "host=b", HonoursSettleBy: c.nowAfter}}, "test"); err != nil {
				t.Fatal(err)
			}
			cl, _ = s.fsm.Cluster("main")
			leaderCaughtUp(s, time.Now().Add(-2*time.Minute))
			agents := &fakeAgents{answer: func(node string, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
				if node == "b" {
					return nil // its host is gone
				}
				return &pgdrv1.CommandResult{Ok: true}
			}}
			agents.start(t, s, "a", "b", "c")
			done, wait := s.settlePromote(context.Background(), cl, "c")
			if (wait != "") != c.wantWait {
				t.Fatalf("done %q, wait %q: want wait=%v", done, wait, c.wantWait)
			}
		})
	}
}

// TestSameMemberHonoursSettleBy: an agent that starts keeping settle_by
// (upgraded, or its watchdog turned on) re-registers with nothing else
// changed; the registration must still reach the state, or the leader
// would never count on the promise.
func TestSameMemberHonoursSettleBy(t *testing.T) {
	a := &pgdrv1.Member{Name: "b", Cluster: "main", Region: "r1", Dsn: "host=b"}
	b := proto.Clone(a).(*pgdrv1.Member)
	b.HonoursSettleBy = true
	if sameMember(a, b) {
		t.Fatal("a registration that only turns honours_settle_by on counts as unchanged")
	}
}

// TestNoPromoteWithoutOrderedMark: review 3/3. A promote order whose
// ORDERED mark was not committed is not sent (a later outcome mark would
// otherwise land on an earlier leader's order still in flight): the
// retry returns the error and is tried again later.
func TestNoPromoteWithoutOrderedMark(t *testing.T) {
	s := testLeader(t)
	ctx := context.Background()
	for _, m := range []string{"a", "b", "c"} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Name: m, Cluster: "main", Region: "r1", Dsn: "host=" + m}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*pgdrv1.SetPrimary{{Cluster: "main", Name: "a"}, {Cluster: "main", Name: "b", ExpectedEpoch: 1, Promote: true}} {
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, p, "test"); err != nil {
			t.Fatal(err)
		}
	}
	agents := &fakeAgents{answer: func(string, *pgdrv1.AgentCommand) *pgdrv1.CommandResult { return &pgdrv1.CommandResult{Ok: true} }}
	agents.start(t, s, "a", "b", "c")
	cl, _ := s.fsm.Cluster("main")
	// Nothing can be committed any more.
	if err := s.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	_, err := s.promoteRecorded(ctx, cl, "test: still in recovery")
	for _, o := range agents.orders() {
		if strings.Contains(o, "promote") {
			t.Fatalf("orders %v (err %v): a promote order went out although its ORDERED mark was not committed", agents.orders(), err)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "recording") {
		t.Fatalf("promoteRecorded: err %v, want the failure to record the order", err)
	}
}

// TestReportSampledAfterOpeningPing: review 4, over the agent API. The
// ping that opens a command stream is noted when it goes out, so a report
// that names it was sampled after then; a report naming a command this
// leader did not send (another leader's), or none, has no known sample
// time, however late it arrives.
func TestReportSampledAfterOpeningPing(t *testing.T) {
	s := testServer(t, Options{Barrier: func(time.Duration) error { return nil }})
	startInmemRaft(t, s)
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Cluster: "main", Name: "pg-a", Region: "eu-west-1", Dsn: "host=pg-a"}})
	ca, dial := agentAPIServer(t, s)
	cert := issueTestCert(t, ca, "pg-a", tlsutil.RoleAgent, "urn:pgdr:cluster:main")
	cli := dial(&cert, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := time.Now()
	cs, err := cli.Commands(ctx, &pgdrv1.CommandsRequest{Cluster: "main", Node: "pg-a"})
	if err != nil {
		t.Fatal(err)
	}
	ping, err := cs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ping.GetPing() == nil || ping.GetId() == "" {
		t.Fatalf("the stream opened with %v, want a ping with an id", ping)
	}
	k := memberKey{"main", "pg-a"}
	for _, c := range []struct {
		echo  string
		known bool
	}{{"", false}, {"0123456789abcdef", false}, {ping.GetId(), true}} {
		rs, err := cli.Report(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Send(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a", AfterCommandId: c.echo}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
		sm, ok := s.view.get(k)
		if !ok || sm.report.GetAfterCommandId() != c.echo {
			t.Fatalf("report naming %q not stored: %v", c.echo, sm.report)
		}
		if known := !sm.sampledAfter.IsZero(); known != c.known {
			t.Fatalf("report naming %q: sampled after %v, want known=%v", c.echo, sm.sampledAfter, c.known)
		}
		if c.known && (sm.sampledAfter.Before(before) || sm.sampledAfter.After(sm.at)) {
			t.Fatalf("report naming the opening ping: sampled after %v, not between the stream's opening (%v) and the report's receipt (%v)",
				sm.sampledAfter, before, sm.at)
		}
	}
}
