package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/fsm"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// historyServer is a Server with only an FSM, and a function that applies
// one command to it.
func historyServer(t *testing.T, opts fsm.Options) (*Server, func(pgdrv1.CommandType, proto.Message)) {
	t.Helper()
	f := fsm.New(nil, opts)
	var index uint64
	apply := func(ct pgdrv1.CommandType, m proto.Message) {
		t.Helper()
		index++
		c, err := fsm.NewCommand(ct, m, "coordinator:test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := f.Apply(&raft.Log{Index: index, Data: b}).(*pgdrv1.ApplyResult); res.GetError() != "" {
			t.Fatalf("apply %s: %s", ct, res.GetError())
		}
	}
	return &Server{fsm: f}, apply
}

// TestPendingFailover: an intent without a result is pending until its
// result or a later intent; a manual intent keeps its kind prefix; a
// switchover intent is pending too (resumed under switchover-* kinds)
// until its result; other clusters do not count.
func TestPendingFailover(t *testing.T) {
	s, apply := historyServer(t, fsm.Options{})
	record := func(cluster, kind, node string, epoch uint64, details map[string]string) {
		t.Helper()
		apply(pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
			Cluster: cluster, Kind: kind, Node: node, Epoch: epoch, Message: kind + " " + node, Details: details,
		}})
	}
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("empty history: pending %+v", p)
	}
	record("main", kindFailoverIntent, "pg-a2", 3, map[string]string{"old_primary": "pg-a1"})
	record("main", kindFailoverStep, "pg-a2", 4, nil)
	p := s.pendingFailover("main")
	if p == nil || p.cand != "pg-a2" || p.old != "pg-a1" || p.epoch != 3 || p.prefix != "" {
		t.Fatalf("after an intent and a step: %+v", p)
	}
	if p := s.pendingFailover("other"); p != nil {
		t.Fatalf("another cluster: %+v", p)
	}
	record("main", kindFailoverResult, "pg-a2", 4, nil)
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("after the result: %+v", p)
	}
	record("main", kindManualIntent, "pg-b1", 4, map[string]string{"old_primary": "pg-a2"})
	if p := s.pendingFailover("main"); p == nil || p.prefix != manualPrefix || p.cand != "pg-b1" {
		t.Fatalf("manual intent: %+v", p)
	}
	record("main", kindSwitchoverIntent, "pg-a1", 5, map[string]string{"old_primary": "pg-b1", "target": "pg-a1"})
	if p := s.pendingFailover("main"); p == nil || p.prefix != switchoverKinds || p.cand != "pg-a1" || p.old != "pg-b1" || p.epoch != 5 {
		t.Fatalf("a switchover intent without a result is not pending: %+v", p)
	}
	record("main", kindSwitchoverResult, "pg-a1", 6, nil)
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("after the switchover's result: %+v", p)
	}
	record("main", kindManualIntent, "pg-b1", 5, map[string]string{"old_primary": "pg-a1"})
	record("main", kindManualResult, "pg-b1", 6, nil)
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("after a manual result: %+v", p)
	}
}

// TestSwitchoverKinds: a resumed switchover's failover-* events are
// recorded as switchover-* events.
func TestSwitchoverKinds(t *testing.T) {
	ctx := withKindPrefix(context.Background(), switchoverKinds)
	for kind, want := range map[string]string{
		kindFailoverStep: kindSwitchoverStep, kindFailoverResult: kindSwitchoverResult, kindPromoteRetry: kindPromoteRetry,
	} {
		if got := historyKind(ctx, kind); got != want {
			t.Errorf("historyKind(%s) = %s, want %s", kind, got, want)
		}
	}
	if got := historyKind(withKindPrefix(context.Background(), manualPrefix), kindFailoverResult); got != kindManualResult {
		t.Errorf("manual: %s", got)
	}
}

// TestPrimaryPromoted: the recorded primary counts as promoted at its
// epoch once a failover's or switchover's result "done" for it is recorded
// at that epoch, or when it was the initial primary; a failed result, a
// result of an earlier epoch or of another node does not count. recordedBy
// names the operation that recorded it and the primary it replaced.
func TestPrimaryPromoted(t *testing.T) {
	s, apply := historyServer(t, fsm.Options{})
	for _, n := range []string{"a", "b", "c"} {
		apply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Name: n, Cluster: "main", Region: "r1", Dsn: "host=" + n, ApiUrl: "http://" + n + ":8008", GossipAddress: n + ":7946"}})
	}
	// Events carry the promote marks the leader gives them.
	record := func(kind, node string, epoch uint64, msg string, details map[string]string) {
		t.Helper()
		mark := pgdrv1.PromoteMark_PROMOTE_MARK_UNSPECIFIED
		switch {
		case strings.HasPrefix(msg, "done"):
			mark = pgdrv1.PromoteMark_PROMOTE_MARK_PROMOTED
		case strings.HasPrefix(msg, "failed"):
			mark = pgdrv1.PromoteMark_PROMOTE_MARK_NOT_SENT
		case kind == kindPromoteRetry:
			mark = pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED
		}
		apply(pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
			Cluster: "main", Kind: kind, Node: node, Epoch: epoch, Message: msg, Details: details,
		}, Promote: mark})
	}
	setPrimary := func(name string, epoch uint64, reason string) {
		t.Helper()
		apply(pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: name, ExpectedEpoch: epoch, Reason: reason,
			Promote: !strings.HasPrefix(reason, "initial primary")})
	}
	promoted := func() bool {
		c, _ := s.fsm.Cluster("main")
		return s.primaryPromoted(c)
	}
	setPrimary("a", 0, "initial primary: the only member that is not in recovery")
	if !promoted() {
		t.Fatal("the initial primary does not count as promoted")
	}
	// A failover to b whose promote order failed.
	record(kindFailoverIntent, "b", 1, "promote b in place of a", map[string]string{"old_primary": "a"})
	setPrimary("b", 1, "failover: a is gone")
	record(kindFailoverResult, "b", 2, "failed: promote: no command stream", nil)
	record(kindFailoverResult, "c", 2, "done: c is primary at epoch 2", nil) // another node
	record(kindFailoverResult, "b", 1, "done: b is primary at epoch 1", nil) // another epoch
	if promoted() {
		t.Fatal("b counts as promoted after a failed promote")
	}
	if prefix, old := s.recordedBy("main", "b", 2); prefix != "" || old != "a" {
		t.Fatalf("recordedBy b at 2: %q %q", prefix, old)
	}
	record(kindPromoteRetry, "b", 2, "b is recorded as primary at epoch 2 but still in recovery", nil)
	record(kindFailoverResult, "b", 2, "done: b is primary at epoch 2", nil)
	if !promoted() {
		t.Fatal("b does not count as promoted after its result done")
	}
	// A switchover to c, interrupted after c was recorded.
	record(kindSwitchoverIntent, "c", 2, "switch over from b to c", map[string]string{"old_primary": "b", "target": "c"})
	setPrimary("c", 2, "switchover requested by test")
	if promoted() {
		t.Fatal("c counts as promoted right after it was recorded")
	}
	if prefix, old := s.recordedBy("main", "c", 3); prefix != switchoverKinds || old != "b" {
		t.Fatalf("recordedBy c at 3: %q %q", prefix, old)
	}
	record(kindSwitchoverResult, "c", 3, "done: c is primary at epoch 3", nil)
	if !promoted() {
		t.Fatal("c does not count as promoted after the switchover's result done")
	}

	// The events that recorded the primary fell out of the bounded
	// history: it still does not count as promoted (review D7: the state,
	// not the history, says so).
	s, apply = historyServer(t, fsm.Options{HistoryLimit: 3})
	for _, n := range []string{"a", "b"} {
		apply(pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Name: n, Cluster: "main", Region: "r1", Dsn: "host=" + n, ApiUrl: "http://" + n + ":8008", GossipAddress: n + ":7946"}})
	}
	setPrimary("a", 0, "initial primary")
	setPrimary("b", 1, "failover: a is gone")
	if promoted() {
		t.Fatal("b counts as promoted right after it was recorded")
	}
	for range 3 {
		record(kindFollow, "a", 2, "a follows b", nil)
	}
	if promoted() {
		t.Fatal("b counts as promoted once the history evicted the events that recorded it")
	}
}

// TestRepromotePause: the pause between orders to an unpromoted primary
// doubles with each failure and is bounded.
func TestRepromotePause(t *testing.T) {
	for failures, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 2 * time.Minute, 2 * time.Minute} {
		if got := repromotePause(failures); got != want {
			t.Errorf("repromotePause(%d) = %s, want %s", failures, got, want)
		}
	}
	if got := repromotePause(1000); got != repromoteMaxPause {
		t.Errorf("repromotePause(1000) = %s", got)
	}
}
