package fsm

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/policy"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const tDrillRun = pgdrv1.CommandType_COMMAND_TYPE_RECORD_DRILL_RUN

func drillIntent(id, node string) *pgdrv1.RecordDrillRun {
	return &pgdrv1.RecordDrillRun{Cluster: "main", Phase: &pgdrv1.RecordDrillRun_Intent{Intent: &pgdrv1.DrillRun{
		Id: id, Node: node, Tier: "daily", TimeoutMs: 600_000, Reason: "on request",
		Checks: []*pgdrv1.DrillCheck{{Name: "one", Database: "postgres", Sql: "select 1", Expect: "1"}}}}}
}

func drillResult(id, r string) *pgdrv1.RecordDrillRun {
	return &pgdrv1.RecordDrillRun{Cluster: "main", Phase: &pgdrv1.RecordDrillRun_Result{Result: &pgdrv1.DrillRunResult{
		Id: id, Result: r, Report: &pgdrv1.DrillReport{Ok: r == RunOK, Backup: "B1", Timings: &pgdrv1.DrillTimings{Total: 9}}}}}
}

func drills(h *harness) []*pgdrv1.DrillRun {
	c, _ := h.f.Cluster("main")
	return c.GetDrillRuns()
}

// TestRecordDrillRun: intent -> steps -> result; never two drills of a
// cluster at once (a backup run alongside is fine); a result only once;
// bad intents name the field and change nothing.
func TestRecordDrillRun(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tBackupRun, intent("b1", "hourly", "incr", "pg-a2"))
	h.mustApply(tDrillRun, drillIntent("d1", "pg-a2"))
	if r := drills(h)[0]; r.GetRequestedBy() != "admin:test" || r.GetStartedAt() == nil || len(r.GetChecks()) != 1 {
		t.Fatalf("intent recorded as %v", r)
	}
	if res := h.apply(tDrillRun, drillIntent("d2", "pg-a1")); res.GetOk() || !strings.Contains(res.GetError(), "never two drills of a cluster at once") {
		t.Fatalf("a second drill in flight: %v", res)
	}
	h.mustApply(tDrillRun, &pgdrv1.RecordDrillRun{Cluster: "main", Phase: &pgdrv1.RecordDrillRun_Step{Step: &pgdrv1.DrillRunStep{Id: "d1", Step: StepAccepted}}})
	h.mustApply(tDrillRun, drillResult("d1", RunFailed))
	if r := drills(h)[0]; r.GetResult() != RunFailed || r.GetAcceptedAt() == nil || r.GetReport().GetTimings().GetTotal() != 9 || r.GetFinishedAt() == nil {
		t.Fatalf("result recorded as %v", r)
	}
	if res := h.apply(tDrillRun, drillResult("d1", RunOK)); res.GetOk() || !strings.Contains(res.GetError(), "already ended: failed") {
		t.Fatalf("a second result: %v", res)
	}
	before := h.f.State()
	bad := map[string]*pgdrv1.RecordDrillRun{}
	bad["node"] = drillIntent("d3", "nobody")
	bad["timeout_ms"] = drillIntent("d3", "pg-a2")
	bad["timeout_ms"].GetIntent().TimeoutMs = 0
	bad["checks[0] (one).sql"] = drillIntent("d3", "pg-a2")
	bad["checks[0] (one).sql"].GetIntent().Checks[0].Sql = strings.Repeat("x", policy.MaxDrillCheckSQL+1)
	bad["17 checks"] = drillIntent("d3", "pg-a2")
	for i := 0; i < policy.MaxDrillChecks; i++ {
		bad["17 checks"].GetIntent().Checks = append(bad["17 checks"].GetIntent().Checks, &pgdrv1.DrillCheck{Name: "n", Sql: "select 1"})
	}
	bad["given with a target time"] = drillIntent("d3", "pg-a2")
	bad["given with a target time"].GetIntent().TargetAfterBackupMs = 1000
	bad["given with a target time"].GetIntent().TargetTime = timestamppb.New(t0)
	bad["name one, not both"] = drillIntent("d3", "pg-a2")
	bad["name one, not both"].GetIntent().BackupId = "B1"
	for want, rec := range bad {
		if res := h.apply(tDrillRun, rec); res.GetOk() || !strings.Contains(res.GetError(), want) {
			t.Errorf("bad intent (%s): %v", want, res)
		}
	}
	after := h.f.State()
	after.LastIndex = before.LastIndex
	if !proto.Equal(before, after) {
		t.Fatal("a rejected drill record changed the state")
	}
}

// TestDrillRunsCompactedAndSnapshot: bounded by MaxDrillRuns, the oldest
// first, never the newest ok, the newest failed or the one in flight;
// snapshot and restore keep them, the one in flight still blocking.
func TestDrillRunsCompactedAndSnapshot(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tDrillRun, drillIntent("ok-1", "pg-a2"))
	h.mustApply(tDrillRun, drillResult("ok-1", RunOK))
	h.mustApply(tDrillRun, drillIntent("failed-1", "pg-a2"))
	h.mustApply(tDrillRun, drillResult("failed-1", RunFailed))
	for i := 0; i < MaxDrillRuns+20; i++ {
		id := fmt.Sprint("t-", i)
		h.mustApply(tDrillRun, drillIntent(id, "pg-a2"))
		if i < MaxDrillRuns+19 {
			h.mustApply(tDrillRun, drillResult(id, RunTimeout))
		}
	}
	got := drills(h)
	if len(got) != MaxDrillRuns {
		t.Fatalf("%d drills kept, want %d", len(got), MaxDrillRuns)
	}
	ids := map[string]bool{}
	for _, r := range got {
		ids[r.GetId()] = true
	}
	if !ids["ok-1"] || !ids["failed-1"] || ids["t-0"] || !ids[fmt.Sprint("t-", MaxDrillRuns+19)] {
		t.Fatalf("kept %v", ids)
	}
	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	c, _ := fresh.Cluster("main")
	if len(c.GetDrillRuns()) != len(got) || !proto.Equal(c.GetDrillRuns()[len(got)-1], got[len(got)-1]) {
		t.Fatalf("restored %d drills", len(c.GetDrillRuns()))
	}
	h2 := &harness{t: t, f: fresh, index: h.index}
	if res := h2.apply(tDrillRun, drillIntent("again", "pg-a1")); res.GetOk() {
		t.Fatal("a second drill after restore")
	}
	h2.mustApply(tDrillRun, drillResult(fmt.Sprint("t-", MaxDrillRuns+19), RunOK))
}
