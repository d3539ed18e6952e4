package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/runbook"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRunbookGate: a coordinator of the incidents era advertises feature
// level 4 and skips COMMAND_TYPE_RUNBOOK (proposed ignore_if_unknown), so
// runbooks need every voter at a level above it; IncidentsStarted alone
// would let such a voter's state go without the runbooks and runs.
func TestRunbookGate(t *testing.T) {
	if FeatureLevel <= incidentsFeatureLevel {
		t.Fatalf("this coordinator knows COMMAND_TYPE_RUNBOOK but advertises feature level %d, that of the incidents era (%d), whose voters skip it", FeatureLevel, incidentsFeatureLevel)
	}
	if FeatureLevel < runbooksFeatureLevel || runbooksFeatureLevel <= incidentsFeatureLevel {
		t.Fatalf("levels: this %d, runbooks %d, incidents %d", FeatureLevel, runbooksFeatureLevel, incidentsFeatureLevel)
	}
	voters := []string{"c1", "c2", "c3"}
	levels := map[string]int{"c2": incidentsFeatureLevel, "c3": runbooksFeatureLevel}
	if ok, why := votersReadyFor("c1", voters, levels, runbooksFeatureLevel, "runbooks"); ok || !strings.Contains(why, "voter c2 has feature level 4, runbooks needs 5") {
		t.Fatalf("runbooks with an incidents-era voter: %v %q", ok, why)
	}
	levels["c2"] = runbooksFeatureLevel
	if ok, why := votersReadyFor("c1", voters, levels, runbooksFeatureLevel, "runbooks"); !ok {
		t.Fatalf("runbooks with every voter at %d: %q", runbooksFeatureLevel, why)
	}
}

// TestRunbookViewReposUnknown: with no fresh report from the primary the
// repositories' state is unknown, and a repos_caught_up wait does not
// hold ("all 0 repositories caught up" let the run go on to its
// switchover with the archive behind).
func TestRunbookViewReposUnknown(t *testing.T) {
	s := testServer(t, Options{})
	c := &pgdrv1.Cluster{Name: "main", Primary: "a1", Epoch: 1, Members: map[string]*pgdrv1.Member{
		"a1": {Name: "a1", Region: "eu"}, "b1": {Name: "b1", Region: "us"}}}
	v := s.runbooks.view(c, "")
	v.Settling = false
	rb, err := runbook.Parse([]byte("name: w\nsteps:\n  - {id: repos, action: wait, condition: repos_caught_up}\n"))
	if err != nil {
		t.Fatal(err)
	}
	run, err := runbook.NewRun(rb, "RB-1", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := runbook.Next(rb, run, v, time.Now()); d.Kind != runbook.KindStart {
		t.Fatalf("repos_caught_up with no report from the primary: %s (%s), want the wait to begin", d.Kind, d.Reason)
	}
}

// TestRunbookProposesOnlyAsLeader: the runner records a decision or an
// outcome only as this term's caught-up leader, on its own Raft log: a
// deposed leader (whose runner has not stopped yet) must not forward a
// decision taken on its own view to the next leader, which would commit
// it and let the deposed one carry the action out beside the new one.
func TestRunbookProposesOnlyAsLeader(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	testutil.WaitFor(t, 20*time.Second, "caught up, incidents started", func() (bool, error) {
		return s.caughtUpLeader() && s.fsm.IncidentsStarted(), nil
	})
	put := &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Put{Put: &pgdrv1.RunbookPut{Yaml: "name: x\nsteps:\n  - {id: a, action: pause}\n"}}}
	before := s.fsm.LastIndex()
	s.mu.Lock()
	s.caughtUp = false // as a leader whose term ended, or not caught up yet
	s.mu.Unlock()
	if s.runbooks.propose(context.Background(), "test", put) {
		t.Fatal("proposed while not the caught-up leader")
	}
	if got := len(s.fsm.Runbooks()); got != 0 {
		t.Fatalf("%d runbooks applied (log %d -> %d)", got, before, s.fsm.LastIndex())
	}
	s.mu.Lock()
	s.caughtUp = true
	s.mu.Unlock()
	if !s.runbooks.propose(context.Background(), "test", put) || len(s.fsm.Runbooks()) != 1 {
		t.Fatal("the caught-up leader could not propose")
	}
}

// TestRunbookViewTargetsAsSwitchover: the runbook picks a switchover's
// target among the replicas the switchover itself accepts: a replica
// tagged no-failover (or beyond the lag limit, not streaming, ...) is no
// target, even when it lags least; picking it failed the step (and rolled
// the run back) while an acceptable replica was there.
func TestRunbookViewTargetsAsSwitchover(t *testing.T) {
	s := testServer(t, Options{})
	c := &pgdrv1.Cluster{Name: "main", Primary: "a1", Epoch: 1, PrimaryLastLsn: 1000, PrimaryLastLsnEpoch: 1, Members: map[string]*pgdrv1.Member{
		"a1": {Name: "a1", Region: "eu"}, "b1": {Name: "b1", Region: "us", Tags: []string{failover.TagNoFailover}}, "b2": {Name: "b2", Region: "us"}}}
	now := time.Now()
	s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "a1", Time: timestamppb.New(now), PostmasterAlive: true, Connectable: true, Timeline: 1, CurrentLsn: 1000}, now, time.Time{})
	for n, lsn := range map[string]uint64{"b1": 1000, "b2": 990} {
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: n, Time: timestamppb.New(now), PostmasterAlive: true, Connectable: true, InRecovery: true,
			Streaming: true, Timeline: 1, ReceiveLsn: lsn, ReplayLsn: lsn, LagBytes: int64(1000 - lsn)}, now, time.Time{})
	}
	v := s.runbooks.view(c, "")
	v.Settling = false
	rb, err := runbook.Parse([]byte("name: m\nsteps:\n  - {id: move, action: switchover, away_from_region: eu}\n"))
	if err != nil {
		t.Fatal(err)
	}
	run, err := runbook.NewRun(rb, "RB-1", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if d := runbook.Next(rb, run, v, now); d.Kind != runbook.KindStart || d.Target != "b2" {
		t.Fatalf("%s → %q (%s), want the switchover to b2 (b1 is tagged %s)", d.Kind, d.Target, d.Reason, failover.TagNoFailover)
	}
}

// TestRunbookDryRunNoFailoverTarget: a dry run does not plan a
// switchover to a member tagged no-failover (the switchover refuses it),
// whether it is up or only assumed back by a wait: the failback to a
// region whose only replica is tagged would wait, fail its switchover and
// roll back; it is refused up front.
func TestRunbookDryRunNoFailoverTarget(t *testing.T) {
	s := testServer(t, Options{})
	c := &pgdrv1.Cluster{Name: "main", Primary: "b2", Epoch: 1, PrimaryLastLsn: 1000, PrimaryLastLsnEpoch: 1, Members: map[string]*pgdrv1.Member{
		"a1": {Name: "a1", Region: "eu", Tags: []string{failover.TagNoFailover}}, "b1": {Name: "b1", Region: "us"}, "b2": {Name: "b2", Region: "us"}}}
	text, _ := runbook.BuiltinText("regional-failback")
	rb, err := runbook.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, up := range []bool{true, false} {
		now := time.Now()
		s.view.reset()
		s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "b2", Time: timestamppb.New(now), PostmasterAlive: true, Connectable: true, Timeline: 1, CurrentLsn: 1000}, now, time.Time{})
		for _, n := range []string{"a1", "b1"} {
			if n == "a1" && !up {
				continue
			}
			s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: n, Time: timestamppb.New(now), PostmasterAlive: true, Connectable: true, InRecovery: true,
				Streaming: true, Timeline: 1, ReceiveLsn: 1000, ReplayLsn: 1000}, now, time.Time{})
		}
		plan, err := runbook.DryRun(rb, map[string]string{"region": "eu"}, s.runbooks.view(c, ""))
		if !errors.Is(err, runbook.ErrPrecondition) || !strings.Contains(err.Error(), "to_region: no healthy replica in region eu") {
			t.Fatalf("a1 up=%t: dry run: %v\n%s", up, err, plan)
		}
	}
}

// TestRunbookRequester: a runbook applied (or run) through a follower,
// which forwards the call to the leader, is recorded as the operator's,
// not as the forwarding coordinator's.
func TestRunbookRequester(t *testing.T) {
	s := testServer(t, Options{})
	startInmemRaft(t, s)
	testutil.WaitFor(t, 20*time.Second, "caught up, incidents started", func() (bool, error) {
		return s.caughtUpLeader() && s.fsm.IncidentsStarted(), nil
	})
	ctx := context.WithValue(context.Background(), identityKey{}, identity{Name: "c2", Role: tlsutil.RoleCoordinator, ViaCert: true})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(requestedByKey, "admin:alice"))
	a := &adminAPI{s: s}
	if _, err := a.ApplyRunbook(ctx, &pgdrv1.ApplyRunbookRequest{Yaml: "name: x\nsteps:\n  - {id: a, action: pause}\n"}); err != nil {
		t.Fatal(err)
	}
	if got := s.fsm.Runbooks()[0].GetUpdatedBy(); got != "admin:alice (via coordinator:c2)" {
		t.Fatalf("updated_by %q, want the operator's", got)
	}
	// A shipped runbook's name is refused by the API (the applier does
	// not ask: it depends on the binary).
	if _, err := a.ApplyRunbook(ctx, &pgdrv1.ApplyRunbookRequest{Yaml: "name: regional-evacuation\nsteps:\n  - {id: a, action: pause}\n"}); err == nil || !strings.Contains(err.Error(), "pgdr ships") {
		t.Fatalf("apply under a shipped name: %v", err)
	}
}
