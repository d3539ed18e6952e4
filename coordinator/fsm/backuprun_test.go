package fsm

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

const tBackupRun = pgdrv1.CommandType_COMMAND_TYPE_RECORD_BACKUP_RUN

func intent(id, tier, typ, node string) *pgdrv1.RecordBackupRun {
	return &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Intent{Intent: &pgdrv1.BackupRun{
		Id: id, Tier: tier, Type: typ, Node: node, Slot: timestamppb.New(t0), Missed: 1, TimeoutMs: 3600_000,
		Repositories: []string{"local"}, Reason: "tier " + tier + " due",
		// Fields the FSM owns or that come later are ignored in an intent.
		StartedAt: timestamppb.New(t0.Add(-time.Hour)), SizeBytes: 7, SentAt: timestamppb.New(t0)}}}
}

func step(id, s string) *pgdrv1.RecordBackupRun {
	return &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{Step: &pgdrv1.BackupRunStep{Id: id, Step: s}}}
}

func result(id, r, errText string) *pgdrv1.RecordBackupRun {
	return &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Result{Result: &pgdrv1.BackupRunResult{
		Id: id, Result: r, Error: errText, SizeBytes: 1 << 30, StoredBytes: 1 << 28, BackupId: "20250301T120000F"}}}
}

func runs(h *harness) []*pgdrv1.BackupRun {
	c, _ := h.f.Cluster("main")
	return c.GetBackupRuns()
}

// TestRecordBackupRun: intent -> steps -> result, stamped with the
// command's time and actor; never two runs in flight; a result only once;
// bad intents are rejected and change nothing.
func TestRecordBackupRun(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tBackupRun, intent("r1", "hourly", "incr", "pg-a2"))
	at := t0.Add(time.Duration(h.index) * time.Second)
	r := runs(h)[0]
	if r.GetStartedAt().AsTime() != at || r.GetRequestedBy() != "admin:test" || r.GetResult() != "" ||
		r.GetSizeBytes() != 0 || r.GetSentAt() != nil || r.GetSlot().AsTime() != t0 || r.GetRepositories()[0] != "local" {
		t.Fatalf("intent recorded as %v", r)
	}
	// In flight: a second intent is refused, whoever proposes it.
	res := h.apply(tBackupRun, intent("r2", "daily", "full", "pg-a1"))
	if res.GetOk() || !strings.Contains(res.GetError(), "run r1 of tier hourly on pg-a2 is in flight: never two backups of a cluster at once") {
		t.Fatalf("a second run while one is in flight: %v", res)
	}
	h.mustApply(tBackupRun, step("r1", StepSent))
	h.mustApply(tBackupRun, step("r1", StepAccepted))
	if res := h.apply(tBackupRun, step("r1", "dancing")); res.GetOk() {
		t.Fatal("an unknown step was accepted")
	}
	h.mustApply(tBackupRun, result("r1", RunOK, ""))
	done := t0.Add(time.Duration(h.index) * time.Second)
	r = runs(h)[0]
	if r.GetSentAt() == nil || r.GetAcceptedAt() == nil || r.GetResult() != RunOK || r.GetFinishedAt().AsTime() != done ||
		r.GetSizeBytes() != 1<<30 || r.GetStoredBytes() != 1<<28 || r.GetBackupId() != "20250301T120000F" {
		t.Fatalf("result recorded as %v", r)
	}
	// A late answer after the result (the leader recorded a timeout, then
	// the agent answered): refused, the first result stays.
	if res := h.apply(tBackupRun, result("r1", RunFailed, "late")); res.GetOk() || !strings.Contains(res.GetError(), "already ended: ok") {
		t.Fatalf("a second result: %v", res)
	}
	// A skipped slot is a finished run with no node.
	skip := intent("r2", "nightly", "diff", "")
	skip.GetIntent().Result, skip.GetIntent().Reason = RunSkipped, "run_on standby-only: no healthy replica"
	h.mustApply(tBackupRun, skip)
	if r := runs(h)[1]; r.GetResult() != RunSkipped || r.GetFinishedAt() == nil {
		t.Fatalf("skip recorded as %v", r)
	}
	// A long agent error is cut, not refused.
	h.mustApply(tBackupRun, intent("r3", "daily", "full", "pg-a1"))
	h.mustApply(tBackupRun, result("r3", RunFailed, strings.Repeat("é", 5000)))
	if e := runs(h)[2].GetError(); len(e) > MaxBackupRunText || !strings.HasSuffix(e, "[cut]") {
		t.Fatalf("error of %d bytes stored", len(e))
	}

	before := h.f.State()
	for name, c := range map[string]*pgdrv1.RecordBackupRun{
		"unknown cluster": {Cluster: "nope", Phase: intent("x1", "hourly", "incr", "pg-a1").Phase},
		"duplicate id":    intent("r1", "hourly", "incr", "pg-a1"),
		"bad id":          intent("a/b", "hourly", "incr", "pg-a1"),
		"unknown node":    intent("x2", "hourly", "incr", "pg-zz"),
		"bad type":        intent("x3", "hourly", "snapshot", "pg-a1"),
		"bad tier":        intent("x4", "../h", "incr", "pg-a1"),
		"no timeout": func() *pgdrv1.RecordBackupRun {
			c := intent("x5", "hourly", "incr", "pg-a1")
			c.GetIntent().TimeoutMs = 0
			return c
		}(),
		"huge timeout": func() *pgdrv1.RecordBackupRun {
			c := intent("x7", "hourly", "incr", "pg-a1")
			c.GetIntent().TimeoutMs = 1 << 62
			return c
		}(),
		"result in an intent": func() *pgdrv1.RecordBackupRun {
			c := intent("x6", "hourly", "incr", "pg-a1")
			c.GetIntent().Result = RunOK
			return c
		}(),
		"unknown run":    result("nope", RunOK, ""),
		"bad result":     result("r3", "great", ""),
		"no phase":       {Cluster: "main"},
		"step of a done": step("r1", StepSent),
	} {
		if res := h.apply(tBackupRun, c); res.GetOk() || res.GetError() == "" {
			t.Errorf("%s: accepted", name)
		}
	}
	after := h.f.State()
	after.LastIndex = before.LastIndex
	if !proto.Equal(before, after) {
		t.Fatal("a rejected backup run record changed the state")
	}
}

// TestBackupRunsCompacted: the runs are bounded by count, oldest first,
// but the newest run of each tier of the policy and the newest successful
// full survive however many runs of a busy tier follow.
func TestBackupRunsCompacted(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tBackupRun, intent("weekly-1", "weekly", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("weekly-1", RunFailed, "disk full"))
	h.mustApply(tBackupRun, intent("daily-1", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("daily-1", RunOK, ""))
	h.mustApply(tBackupRun, intent("gone-1", "retired", "full", "pg-a2")) // a tier no longer in the policy
	h.mustApply(tBackupRun, result("gone-1", RunOK, ""))
	for i := 0; i < MaxBackupRuns+50; i++ {
		id := fmt.Sprint("hourly-", i)
		h.mustApply(tBackupRun, intent(id, "hourly", "incr", "pg-a2"))
		if i < MaxBackupRuns+49 {
			h.mustApply(tBackupRun, result(id, RunOK, ""))
		}
	}
	got := runs(h)
	if len(got) != MaxBackupRuns {
		t.Fatalf("%d runs kept, want %d", len(got), MaxBackupRuns)
	}
	ids := map[string]bool{}
	for _, r := range got {
		ids[r.GetId()] = true
	}
	// gone-1 (a tier no longer in the policy) is the newest successful
	// full; daily-1 is daily's newest run, weekly-1 weekly's.
	for _, id := range []string{"weekly-1", "daily-1", "gone-1", fmt.Sprint("hourly-", MaxBackupRuns+49)} {
		if !ids[id] {
			t.Errorf("run %s was compacted away", id)
		}
	}
	if ids["hourly-0"] || ids["hourly-52"] || !ids["hourly-53"] {
		t.Errorf("the oldest hourly runs should go first: hourly-0 %v, hourly-52 %v, hourly-53 %v", ids["hourly-0"], ids["hourly-52"], ids["hourly-53"])
	}
	if last := got[len(got)-1]; last.GetResult() != "" {
		t.Fatalf("the run in flight is %v", last)
	}
}

// TestBackupRunsSurviveSnapshot: snapshot and restore keep the runs, the
// one in flight included, so a new leader resumes it.
func TestBackupRunsSurviveSnapshot(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tBackupRun, intent("r1", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r1", RunOK, ""))
	h.mustApply(tBackupRun, intent("r2", "hourly", "incr", "pg-a2"))
	h.mustApply(tBackupRun, step("r2", StepSent))
	want := runs(h)
	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	c, _ := fresh.Cluster("main")
	if len(c.GetBackupRuns()) != 2 || !proto.Equal(c.GetBackupRuns()[0], want[0]) || !proto.Equal(c.GetBackupRuns()[1], want[1]) {
		t.Fatalf("restored runs %v, want %v", c.GetBackupRuns(), want)
	}
	// The restored FSM goes on from there: the run in flight still blocks
	// a second one and can be ended.
	h2 := &harness{t: t, f: fresh, index: h.index}
	if res := h2.apply(tBackupRun, intent("r3", "daily", "full", "pg-a1")); res.GetOk() {
		t.Fatal("a second run after restore")
	}
	h2.mustApply(tBackupRun, result("r2", RunTimeout, "no result within the timeout"))
}

// TestBackupRunCancelAndOutcome (review of issue 16): the "cancel" step
// keeps the run in flight (cleaning up: a second intent is refused) with
// the result to come; a result carries the type the agent took and the
// expiry's outcome; a run that never started ("not_started") does not
// count as its tier's newest run in compaction; all of it survives a
// snapshot.
func TestBackupRunCancelAndOutcome(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.mustApply(tBackupRun, intent("r1", "hourly", "incr", "pg-a2"))
	if res := h.apply(tBackupRun, &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{
		Step: &pgdrv1.BackupRunStep{Id: "r1", Step: StepCancel, Result: RunOK}}}); res.GetOk() {
		t.Fatal("a cancel step with result ok was taken")
	}
	h.mustApply(tBackupRun, &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{
		Step: &pgdrv1.BackupRunStep{Id: "r1", Step: StepCancel, Result: RunTimeout, Note: "over its timeout"}}})
	r := runs(h)[0]
	if r.GetResult() != "" || r.GetCancelAt() == nil || r.GetCancelResult() != RunTimeout || r.GetCancelNote() != "over its timeout" {
		t.Fatalf("cancel step recorded as %v", r)
	}
	if res := h.apply(tBackupRun, intent("r2", "daily", "full", "pg-a1")); res.GetOk() {
		t.Fatal("a second run while one cleans up")
	}
	h.mustApply(tBackupRun, result("r1", RunTimeout, "cleaned up"))

	h.mustApply(tBackupRun, intent("r2", "hourly", "incr", "pg-a2"))
	if res := h.apply(tBackupRun, &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Result{
		Result: &pgdrv1.BackupRunResult{Id: "r2", Result: RunOK, Type: "huge"}}}); res.GetOk() {
		t.Fatal("a bad type in a result was taken")
	}
	h.mustApply(tBackupRun, &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Result{
		Result: &pgdrv1.BackupRunResult{Id: "r2", Result: RunOK, Type: "full", BackupId: "20260501T100000F",
			Expiry: &pgdrv1.BackupExpiry{BackupsDeleted: 2, WalDeleted: 30, ObjectsDeleted: 40, Error: "repository s3: unsigned"}}}})
	r = runs(h)[1]
	if r.GetType() != "full" || r.GetExpiry().GetBackupsDeleted() != 2 || r.GetExpiry().GetWalDeleted() != 30 ||
		r.GetExpiry().GetObjectsDeleted() != 40 || r.GetExpiry().GetError() != "repository s3: unsigned" {
		t.Fatalf("result recorded as %v", r)
	}
	h.mustApply(tBackupRun, intent("r3", "hourly", "incr", "pg-a2"))
	h.mustApply(tBackupRun, result("r3", RunNotStarted, "busy"))
	if r := runs(h)[2]; r.GetResult() != RunNotStarted || r.GetFinishedAt() == nil {
		t.Fatalf("not started run %v", r)
	}
	want := runs(h)
	fresh := New(quietLogger(), Options{})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	c, _ := fresh.Cluster("main")
	for i := range want {
		if !proto.Equal(c.GetBackupRuns()[i], want[i]) {
			t.Fatalf("restored run %v, want %v", c.GetBackupRuns()[i], want[i])
		}
	}

	// Compaction: the hourly tier's newest run that started stays,
	// however many not_started runs come after it.
	h.mustApply(tBackupRun, intent("r4", "hourly", "incr", "pg-a2"))
	h.mustApply(tBackupRun, result("r4", RunFailed, "disk full"))
	for i := 0; i < MaxBackupRuns+10; i++ {
		id := fmt.Sprint("ns-", i)
		h.mustApply(tBackupRun, intent(id, "hourly", "incr", "pg-a2"))
		h.mustApply(tBackupRun, result(id, RunNotStarted, "busy"))
	}
	kept := false
	for _, r := range runs(h) {
		kept = kept || r.GetId() == "r4"
	}
	if !kept || len(runs(h)) != MaxBackupRuns {
		t.Fatalf("hourly's newest started run compacted away (or %d runs)", len(runs(h)))
	}
}
