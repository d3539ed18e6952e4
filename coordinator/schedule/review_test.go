package schedule

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func ordersFor(l *fakeLeader, runID string) []*pgdrv1.AgentCommand {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*pgdrv1.AgentCommand
	for _, o := range l.orders {
		if o.GetBackup().GetRunId() == runID {
			out = append(out, o)
		}
	}
	return out
}

// TestAnswerRetryable (review of issue 16, 1): a final answer whose
// record fails is an ErrRetry (the agent's Complete tries again) and
// recorded when it comes again; an answer about a run this coordinator
// does not know is retryable on a follower, ignored on the leader.
func TestAnswerRetryable(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t)
	r := l.runner("c2")
	final := &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Ok: true,
		Backup: &pgdrv1.BackupReport{RunId: run.GetId(), BackupId: "20260501T100001F", Type: "full"}}
	l.mu.Lock()
	l.failRecord = true
	l.mu.Unlock()
	if _, err := r.Answer(ctx, final); !errors.Is(err, ErrRetry) {
		t.Fatalf("answer whose record failed: %v, want ErrRetry", err)
	}
	l.mu.Lock()
	l.failRecord = false
	l.mu.Unlock()
	if ok, err := r.Answer(ctx, final); !ok || err != nil {
		t.Fatalf("answer again: %v %v", ok, err)
	}
	if got := l.last(); got.GetResult() != ResultOK || got.GetBackupId() != "20260501T100001F" {
		t.Fatalf("run %v", got)
	}
	unknown := &pgdrv1.CommandResult{Id: "x", Cluster: "main", Node: "pg-3", Ok: true, Backup: &pgdrv1.BackupReport{RunId: "not-here-yet"}}
	l.mu.Lock()
	l.follower = true
	l.mu.Unlock()
	if _, err := r.Answer(ctx, unknown); !errors.Is(err, ErrRetry) {
		t.Fatalf("unknown run on a follower: %v, want ErrRetry", err)
	}
	l.mu.Lock()
	l.follower = false
	l.mu.Unlock()
	if ok, err := r.Answer(ctx, unknown); ok || err != nil {
		t.Fatalf("unknown run on the leader: %v %v, want ignored", ok, err)
	}
}

// TestStreamOpenedReorders (review of issue 16, 1 and 3): when an agent's
// command stream opens, its runs in flight are ordered again, accepted
// ones too, with only what is left of their timeout on this leader's
// clock; a cleaning run gets its cancel order again.
func TestStreamOpenedReorders(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t) // 10:00:01, 12 h timeout
	if err := l.Record(ctx, "agent:pg-3", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{
		Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "accepted"}}}); err != nil {
		t.Fatal(err)
	}
	r := l.runner("c2")
	l.set("2026-05-01 11:00:01")
	r.StreamOpened(ctx, "main", "pg-2") // another node: nothing
	if n := len(ordersFor(l, run.GetId())); n != 0 {
		t.Fatalf("%d orders for another node's stream", n)
	}
	r.StreamOpened(ctx, "main", "pg-3")
	os := ordersFor(l, run.GetId())
	if len(os) != 1 || os[0].GetNode() != "pg-3" || os[0].GetBackup().GetCancel() ||
		os[0].GetBackup().GetTimeoutMs() != (11*time.Hour).Milliseconds() {
		t.Fatalf("orders on stream open: %v", os)
	}
	// Reconnected an hour later: an hour less, by this leader's clock.
	l.set("2026-05-01 12:00:01")
	r.StreamOpened(ctx, "main", "pg-3")
	if os = ordersFor(l, run.GetId()); len(os) != 2 || os[1].GetBackup().GetTimeoutMs() != (10*time.Hour).Milliseconds() {
		t.Fatalf("second repeat: %v", os)
	}
	// The agent's pending answer to a repeat of an accepted run writes
	// nothing.
	if ok, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Pending: true,
		Backup: &pgdrv1.BackupReport{RunId: run.GetId()}}); !ok || err != nil {
		t.Fatalf("pending answer: %v %v", ok, err)
	}
	// Cleaning up: the cancel order again.
	if err := l.Record(ctx, "coordinator:c2", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{
		Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "cancel", Result: "timeout"}}}); err != nil {
		t.Fatal(err)
	}
	r.StreamOpened(ctx, "main", "pg-3")
	if os = ordersFor(l, run.GetId()); len(os) != 3 || !os[2].GetBackup().GetCancel() {
		t.Fatalf("cancel order on stream open: %v", os)
	}
}

// TestInheritedTimeoutFromTakeover (review of issue 16, 3): a new leader
// counts an inherited run's time left from its takeover on its own clock:
// a skewed clock (the old leader's started_at in this leader's future or
// far past) neither cancels it at once nor gives it the whole timeout
// again.
func TestInheritedTimeoutFromTakeover(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t) // started 10:00:01 by the old leader's clock, 12 h
	// This leader's clock is 20 h ahead: the run looks 10 h overdue.
	l.set("2026-05-02 06:00:01")
	r := l.runner("c2")
	r.Tick(ctx)
	if got := l.last(); got.GetId() != run.GetId() || got.GetCancelAt() != nil {
		t.Fatalf("cancelled at the takeover, before any grace: %v", got)
	}
	l.set("2026-05-02 06:01:02") // takeover + grace
	r.Tick(ctx)
	if got := l.last(); got.GetCancelAt() == nil || got.GetCancelResult() != ResultTimeout {
		t.Fatalf("not cancelled after the grace from the takeover: %v", got)
	}
	if os := ordersFor(l, run.GetId()); len(os) == 0 || !os[len(os)-1].GetBackup().GetCancel() {
		t.Fatalf("no cancel order: %v", os)
	}
	// No answer within the clean-up deadline: ended with its cancel's result.
	l.set("2026-05-02 06:03:03")
	r.Tick(ctx)
	if got := l.last(); got.GetResult() != ResultTimeout || !strings.Contains(got.GetError(), "clean-up deadline") {
		t.Fatalf("after the clean-up deadline: %v", got)
	}
}

// TestCancelAndRemovedMember (review of issue 16, 4): an operator's cancel
// has the run clean up (cancel result cancelled, actor and note in its
// note) and sends the cancel order; a run on a member removed from the cluster is
// ended on the next tick.
func TestCancelAndRemovedMember(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t)
	r := l.runner("c2")
	if _, err := r.Cancel(ctx, "main", "nope", "admin:alice", ""); !errors.Is(err, ErrNoRun) {
		t.Fatalf("cancel of an unknown run: %v", err)
	}
	got, err := r.Cancel(ctx, "main", "", "admin:alice", "wedged since the disk died")
	if err != nil || got.GetId() != run.GetId() || got.GetResult() != "" || got.GetCancelResult() != ResultCancelled ||
		got.GetCancelNote() != "cancelled by admin:alice: wedged since the disk died" {
		t.Fatalf("cancel: %v %v", got, err)
	}
	if os := ordersFor(l, run.GetId()); len(os) != 1 || !os[0].GetBackup().GetCancel() {
		t.Fatalf("cancel orders %v", os)
	}
	// The run cleans up until its agent answers or the clean-up deadline
	// (TestOperatorCancelCleansUp); a second cancel changes nothing.
	if got, err := r.Cancel(ctx, "main", run.GetId(), "admin:bob", ""); err != nil || got.GetCancelNote() != "cancelled by admin:alice: wedged since the disk died" {
		t.Fatalf("second cancel: %v %v", got, err)
	}

	l2, run2 := setupInherited(t)
	if err := l2.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_REMOVE_MEMBER, &pgdrv1.RemoveMember{Cluster: "main", Name: "pg-3"}); err != nil {
		t.Fatal(err)
	}
	r2 := l2.runner("c2")
	r2.Tick(ctx)
	if got := l2.runs()[0]; got.GetId() != run2.GetId() || got.GetResult() != ResultCancelled || !strings.Contains(got.GetError(), "pg-3 is no longer a member") {
		t.Fatalf("run on a removed member: %v", got)
	}
}

// TestSchedulerGated (review of issue 16, 5): while a voter does not know
// the records, nothing is scheduled or run on request.
func TestSchedulerGated(t *testing.T) {
	ctx := context.Background()
	l := newFakeLeader(t)
	l.notReady = "coordinator c3 has feature level 0, the scheduler needs 1"
	r := l.runner("c1")
	l.set("2026-05-02 10:00:01")
	r.Tick(ctx)
	if len(l.runs()) != 0 {
		t.Fatalf("runs while gated: %v", l.runs())
	}
	if _, err := r.RunNow(ctx, "main", "hourly", "admin:alice"); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "c3") {
		t.Fatalf("manual run while gated: %v", err)
	}
	l.notReady = ""
	r.Tick(ctx)
	if len(l.runs()) != 1 {
		t.Fatalf("no run once ready: %v", l.runs())
	}
}

// TestTypeTakenRecorded (review of issue 16, 7): the run records the type
// the agent took.
func TestTypeTakenRecorded(t *testing.T) {
	ctx := context.Background()
	l, first := setupInherited(t)
	r := l.runner("c2")
	if _, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: first.GetId(), Cluster: "main", Node: "pg-3", Ok: true,
		Backup: &pgdrv1.BackupReport{RunId: first.GetId(), Type: "full", BackupId: "f"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, "coordinator:c2", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Intent{
		Intent: &pgdrv1.BackupRun{Id: "c2-x", Tier: "hourly", Type: "incr", Node: "pg-3", TimeoutMs: 3600_000}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: "c2-x", Cluster: "main", Node: "pg-3", Ok: true,
		Backup: &pgdrv1.BackupReport{RunId: "c2-x", Type: "full", BackupId: "g"}}); err != nil {
		t.Fatal(err)
	}
	if got := l.last(); got.GetType() != "full" || got.GetResult() != ResultOK {
		t.Fatalf("run recorded as %v, want type full (what the agent took)", got)
	}
}

// TestOrderCarriesRetention (issue 16 item 3): a Backup order carries the
// cluster's retention (each tier's rules and the PITR window), which the
// agent's expiry applies after a successful backup.
func TestOrderCarriesRetention(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t) // the policy: hourly, kept 7 days
	r := l.runner("c2")
	r.StreamOpened(ctx, "main", "pg-3")
	os := ordersFor(l, run.GetId())
	if len(os) != 1 {
		t.Fatalf("orders %v", os)
	}
	rt := os[0].GetBackup().GetRetention()
	if rt.GetPitrWindowMs() != (7*24*time.Hour).Milliseconds() || len(rt.GetTiers()) != 1 || rt.GetTiers()[0].GetTier() != "hourly" ||
		rt.GetTiers()[0].GetKeepAgeMs() != (7*24*time.Hour).Milliseconds() {
		t.Fatalf("retention %v", rt)
	}
}
