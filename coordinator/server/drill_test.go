package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/config"
	ptestutil "github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestDrillAdminAPI: the read token lists drills but cannot run one; the
// admin token runs one on the healthy standby (prefer-standby), the
// order reaches its agent's stream, a second one is refused naming the
// first; pending records it accepted; a failed answer is recorded failed
// with its reason and report, goes into history as a drill event and to
// the webhooks as drill-failed, and counts in the metrics; a passed one
// sets the last-success metric; a refused request changes nothing.
func TestDrillAdminAPI(t *testing.T) {
	s, client := adminAPIServer(t)
	ctx := context.Background()
	reader, admin := client("read-secret"), client("admin-secret")
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a2", Cluster: "main", Region: "r1", Dsn: "host=pg-a2", ApiUrl: "http://pg-a2:8008", GossipAddress: "pg-a2:7946"}})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	rcv := &receiver{}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	n, err := newNotifier(&config.Config{Name: "c1", Notifications: config.Notifications{
		Webhooks: []config.Webhook{{URL: hook.URL, Timeout: config.Duration{Duration: 2 * time.Second}, QueueSize: 10}},
		Kinds:    config.DefaultNotificationKinds}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.run(nctx)
	s.notify = n
	agents := &agentAPI{s: s}

	if _, err := reader.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the read token ran a drill: %v", err)
	}
	if _, err := admin.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "no member can run the drill") {
		t.Fatalf("no healthy member: %v", err)
	}
	waitTotalsStarted(t, s)
	before := s.fsm.State()
	if _, err := admin.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main", Tier: "daily", BackupId: "B1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("tier and backup: %v", err)
	}
	after := s.fsm.State()
	after.LastIndex = before.LastIndex
	if !proto.Equal(before, after) {
		t.Fatal("a refused drill changed the state")
	}
	stream := s.hub.open(memberKey{"main", "pg-a2"})
	defer s.hub.close(memberKey{"main", "pg-a2"}, stream)
	primary := s.hub.open(memberKey{"main", "pg-a1"})
	defer s.hub.close(memberKey{"main", "pg-a1"}, primary)
	reportHealthy(s)
	res, err := admin.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main", Tier: "daily"})
	if err != nil {
		t.Fatal(err)
	}
	run := res.GetRun()
	if run.GetNode() != "pg-a2" || run.GetSentAt() == nil || run.GetRequestedBy() != "admin:alice" || !strings.Contains(run.GetReason(), "prefer-standby") {
		t.Fatalf("run %v", run)
	}
	var order *pgdrv1.AgentCommand
	select {
	case order = <-stream:
	case <-time.After(10 * time.Second):
		t.Fatal("no order on pg-a2's command stream")
	}
	if order.GetId() != run.GetId() || order.GetDrill().GetTier() != "daily" || order.GetDrill().GetTimeoutMs() != DefaultDrillTimeout.Milliseconds() {
		t.Fatalf("order %v", order)
	}
	reportHealthy(s)
	if _, err := admin.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main", Node: "pg-a1"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "drill "+run.GetId()+" on pg-a2") {
		t.Fatalf("a second drill: %v", err)
	}
	id := run.GetId()
	for _, r := range []*pgdrv1.CommandResult{
		{Id: id, Cluster: "main", Node: "pg-a2", Pending: true, Drill: &pgdrv1.DrillReport{RunId: id}},
		{Id: id, Cluster: "main", Node: "pg-a2", Error: "drill " + id + " failed: check rows: got 2, want 3", Drill: &pgdrv1.DrillReport{RunId: id,
			Reason: "check rows: got 2, want 3", Backup: "B1", Target: "latest", ChecksFailed: 1, AmcheckRun: true, AmcheckOk: true,
			Timings: &pgdrv1.DrillTimings{FetchWrite: 1, Replay: 2, Checks: 3, Total: 6}, RpoSeconds: 4}},
	} {
		if _, err := agents.CompleteCommand(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	list, err := reader.ListDrillRuns(ctx, &pgdrv1.ListDrillRunsRequest{Cluster: "main"})
	if err != nil {
		t.Fatal(err)
	}
	got := list.GetClusters()[0].GetRuns()[0]
	if got.GetResult() != "failed" || got.GetAcceptedAt() == nil || got.GetReport().GetChecksFailed() != 1 || !strings.Contains(got.GetError(), "got 2, want 3") {
		t.Fatalf("drill after its answer: %v", got)
	}
	ev := s.fsm.History("main", 0, 1)[0]
	if ev.GetKind() != "drill" || ev.GetDetails()["result"] != "failed" || ev.GetDetails()["reason"] != "check rows: got 2, want 3" {
		t.Fatalf("history event %v", ev)
	}
	ptestutil.WaitFor(t, 10*time.Second, "the drill-failed webhook", func() (bool, error) {
		for _, r := range rcv.got() {
			var nt Notification
			if json.Unmarshal(r.body, &nt) == nil && nt.Kind == "drill-failed" && nt.Details["reason"] == "check rows: got 2, want 3" {
				return true, nil
			}
		}
		return false, nil
	})

	// Never on the primary, even when named: it is refused, nothing recorded.
	reportHealthy(s)
	if _, err := admin.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main", Node: "pg-a1"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "never runs on the primary") {
		t.Fatalf("a drill on the named primary: %v, want refused", err)
	}
	// A passed drill on the named standby sets the last-success metric.
	res, err = admin.RunDrill(ctx, &pgdrv1.RunDrillRequest{Cluster: "main", Node: "pg-a2"})
	if err != nil || res.GetRun().GetNode() != "pg-a2" {
		t.Fatalf("drill on pg-a2: %v %v", res, err)
	}
	<-stream
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: res.GetRun().GetId(), Cluster: "main", Node: "pg-a2", Ok: true,
		Drill: &pgdrv1.DrillReport{RunId: res.GetRun().GetId(), Ok: true, Timings: &pgdrv1.DrillTimings{Total: 7}}}); err != nil {
		t.Fatal(err)
	}
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sawLast, sawTotal, sawFailed bool
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "pgdr_drill_last_success_timestamp_seconds":
				sawLast = m.GetGauge().GetValue() > float64(time.Now().Add(-time.Minute).Unix())
			case "pgdr_drill_runs_total":
				for _, l := range m.GetLabel() {
					if l.GetValue() == "failed" && m.GetCounter().GetValue() == 1 {
						sawFailed = true
					}
				}
			case "pgdr_drill_duration_seconds":
				for _, l := range m.GetLabel() {
					if l.GetValue() == "total" && m.GetGauge().GetValue() == 7 {
						sawTotal = true
					}
				}
			}
		}
	}
	if !sawLast || !sawTotal || !sawFailed {
		t.Fatalf("drill metrics: last success %v, total duration %v, failed run counted %v", sawLast, sawTotal, sawFailed)
	}
}

// TestScheduledDrill: a drill schedule in the backup policy starts a drill
// on the standby at its slot, carrying the policy's checks, scratch
// directory and timeout, never a second while one is in flight, and the
// next slot's once it ended; a paused cluster runs none.
func TestScheduledDrill(t *testing.T) {
	s, client := adminAPIServer(t)
	ctx := context.Background()
	admin := client("admin-secret")
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a2", Cluster: "main", Region: "r1", Dsn: "host=pg-a2", ApiUrl: "http://pg-a2:8008", GossipAddress: "pg-a2:7946"}})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	pol := yearlyTiers()
	pol.Drill = &pgdrv1.DrillPolicy{Schedule: "* * * * * *", Tier: "full", Scratch: "/var/tmp/drill", TimeoutSeconds: 600, TargetAfterBackupSeconds: 600,
		Checks: []*pgdrv1.DrillCheck{{Name: "rows", Database: "shop", Sql: "select count(*) from orders", Expect: "42"}}}
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: pol}); err != nil {
		t.Fatal(err)
	}
	bad := proto.Clone(pol).(*pgdrv1.BackupPolicy)
	bad.Drill.Node = "../x"
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: bad}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "drill.node") {
		t.Fatalf("a bad drill node: %v", err)
	}
	stream := s.hub.open(memberKey{"main", "pg-a2"})
	defer s.hub.close(memberKey{"main", "pg-a2"}, stream)
	time.Sleep(1100 * time.Millisecond) // a slot of the every-second schedule passes after the policy was set
	reportHealthy(s)
	s.drills.tick(ctx)
	c, _ := s.fsm.Cluster("main")
	if len(c.GetDrillRuns()) != 1 {
		t.Fatalf("drills after the first tick: %v", c.GetDrillRuns())
	}
	run := c.GetDrillRuns()[0]
	if run.GetNode() != "pg-a2" || run.GetSlot() == nil || run.GetRequestedBy() != "coordinator:"+s.cfg.Name || run.GetSentAt() == nil ||
		!strings.Contains(run.GetReason(), "scheduled slot") {
		t.Fatalf("scheduled drill %v", run)
	}
	order := <-stream
	if o := order.GetDrill(); o.GetRunId() != run.GetId() || o.GetScratch() != "/var/tmp/drill" || o.GetTimeoutMs() != 600_000 ||
		len(o.GetChecks()) != 1 || o.GetChecks()[0].GetExpect() != "42" || o.GetTier() != "full" || o.GetTargetAfterBackupMs() != 600_000 {
		t.Fatalf("order %v", order)
	}
	time.Sleep(1100 * time.Millisecond)
	reportHealthy(s)
	s.drills.tick(ctx)
	if c, _ := s.fsm.Cluster("main"); len(c.GetDrillRuns()) != 1 {
		t.Fatalf("a second drill while one is in flight: %v", c.GetDrillRuns())
	}
	agents := &agentAPI{s: s}
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-a2", Ok: true,
		Drill: &pgdrv1.DrillReport{RunId: run.GetId(), Ok: true}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	reportHealthy(s)
	s.drills.tick(ctx)
	c, _ = s.fsm.Cluster("main")
	if len(c.GetDrillRuns()) != 2 || !c.GetDrillRuns()[1].GetSlot().AsTime().After(run.GetSlot().AsTime()) {
		t.Fatalf("the next slot's drill: %v", c.GetDrillRuns())
	}
	second := c.GetDrillRuns()[1].GetId()
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: second, Cluster: "main", Node: "pg-a2", Ok: true,
		Drill: &pgdrv1.DrillReport{RunId: second, Ok: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Pause(ctx, &pgdrv1.PauseRequest{Cluster: "main", Reason: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	reportHealthy(s)
	s.drills.tick(ctx)
	if c, _ := s.fsm.Cluster("main"); len(c.GetDrillRuns()) != 2 {
		t.Fatalf("a paused cluster ran a scheduled drill: %v", c.GetDrillRuns())
	}
}

// TestDrillResumeAndTimeout: a drill a previous leader recorded but whose
// acceptance never came is ordered again once by this leadership (with
// what is left of its timeout), not on every tick; once its timeout and
// the grace pass it is recorded timed out, its agent gets a cancel order,
// and the history says so.
func TestDrillResumeAndTimeout(t *testing.T) {
	s, _ := adminAPIServer(t)
	ctx := context.Background()
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a2", Cluster: "main", Region: "r1", Dsn: "host=pg-a2", ApiUrl: "http://pg-a2:8008", GossipAddress: "pg-a2:7946"}})
	// The previous leader's intent (this leadership did not order it).
	if err := s.drills.record(ctx, "coordinator:old", &pgdrv1.RecordDrillRun{Cluster: "main", Phase: &pgdrv1.RecordDrillRun_Intent{Intent: &pgdrv1.DrillRun{
		Id: "inherited", Node: "pg-a2", TimeoutMs: 2000, Reason: "scheduled"}}}); err != nil {
		t.Fatal(err)
	}
	stream := s.hub.open(memberKey{"main", "pg-a2"})
	defer s.hub.close(memberKey{"main", "pg-a2"}, stream)
	s.drills.grace = 500 * time.Millisecond
	s.drills.tick(ctx)
	select {
	case o := <-stream:
		if o.GetDrill().GetRunId() != "inherited" || o.GetDrill().GetTimeoutMs() <= 0 || o.GetDrill().GetTimeoutMs() > 2000 {
			t.Fatalf("order again %v", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the inherited drill was not ordered again")
	}
	s.drills.tick(ctx)
	select {
	case o := <-stream:
		t.Fatalf("ordered a second time: %v", o)
	default:
	}
	ptestutil.WaitFor(t, 30*time.Second, "the drill recorded timed out", func() (bool, error) {
		s.drills.tick(ctx)
		c, _ := s.fsm.Cluster("main")
		return c.GetDrillRuns()[0].GetResult() == "timeout", nil
	})
	select {
	case o := <-stream:
		if !o.GetDrill().GetCancel() || o.GetDrill().GetRunId() != "inherited" {
			t.Fatalf("cancel order %v", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no cancel order")
	}
	if ev := s.fsm.History("main", 0, 1)[0]; ev.GetKind() != "drill" || ev.GetDetails()["result"] != "timeout" || !strings.Contains(ev.GetDetails()["reason"], "no result within the timeout") {
		t.Fatalf("history %v", ev)
	}
}

// TestDrillGate: drills need every voter at feature level 2 (a level-1
// voter runs the backup scheduler but would skip drill records); the
// backup scheduler still runs with level-1 voters.
func TestDrillGate(t *testing.T) {
	levels := map[string]int{"c2": 1, "c3": 2}
	voters := []string{"c1", "c2", "c3"}
	if ok, why := votersReadyFor("c1", voters, levels, drillFeatureLevel, "restore drills"); ok ||
		!strings.Contains(why, "voter c2 has feature level 1, restore drills needs 2") {
		t.Fatalf("drills with a level-1 voter: %v %q", ok, why)
	}
	if ok, why := votersReady("c1", voters, levels); !ok {
		t.Fatalf("the backup scheduler with a level-1 voter: %q", why)
	}
	levels["c2"] = 2
	if ok, why := votersReadyFor("c1", voters, levels, drillFeatureLevel, "restore drills"); !ok {
		t.Fatalf("drills with every voter at 2: %q", why)
	}
	if FeatureLevel < drillFeatureLevel {
		t.Fatalf("this coordinator advertises level %d, below drills' %d", FeatureLevel, drillFeatureLevel)
	}
}
