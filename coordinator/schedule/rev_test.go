package schedule

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestOperatorCancelCleansUp (adversarial review of the sched branch, a):
// an operator's cancel of a run whose agent is still running it keeps the
// run in flight, cleaning up, until the agent answers (or the clean-up
// deadline): a due tier must not start a second backup of the cluster
// elsewhere while the first agent is still removing what it wrote.
func TestOperatorCancelCleansUp(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t) // pg-3, started 10:00:01, 12 h timeout
	if err := l.Record(ctx, "agent:pg-3", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{
		Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "accepted"}}}); err != nil {
		t.Fatal(err)
	}
	r := l.runner("c2")
	l.set("2026-05-01 10:59:30")
	got, err := r.Cancel(ctx, "main", "", "admin:alice", "wrong tier")
	if err != nil || got.GetId() != run.GetId() {
		t.Fatalf("cancel: %v %v", got, err)
	}
	if os := ordersFor(l, run.GetId()); len(os) != 1 || !os[0].GetBackup().GetCancel() {
		t.Fatalf("cancel orders %v", os)
	}
	// The hourly tier is due at 11:00; the agent of pg-3 is still
	// cleaning up (its answer has not come).
	l.set("2026-05-01 11:00:30")
	r.Tick(ctx)
	for _, br := range l.runs() {
		if br.GetId() != run.GetId() && br.GetResult() == "" {
			t.Fatalf("before: a second run %s started on %s while %s's agent cleans up after the operator's cancel", br.GetId(), br.GetNode(), run.GetNode())
		}
	}
	if got := l.runs()[0]; got.GetResult() != "" || got.GetCancelAt() == nil || got.GetCancelResult() != ResultCancelled {
		t.Fatalf("the cancelled run is not cleaning up: %v", got)
	}
	// A second cancel of the cleaning run: nothing more (the clean-up
	// deadline ends it).
	if _, err := r.Cancel(ctx, "main", run.GetId(), "admin:alice", ""); err != nil {
		t.Fatalf("second cancel of a cleaning run: %v", err)
	}
	// The agent's final answer ends it as cancelled, with who asked.
	if _, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3",
		Error: "cancelled by the coordinator", Backup: &pgdrv1.BackupReport{RunId: run.GetId()}}); err != nil {
		t.Fatal(err)
	}
	if got := l.runs()[0]; got.GetResult() != ResultCancelled || !strings.Contains(got.GetError(), "cancelled by admin:alice: wrong tier") {
		t.Fatalf("after the agent's answer: %v", got)
	}

	// No answer: the clean-up deadline (on this leader's clock) ends it.
	l2, run2 := setupInherited(t)
	r2 := l2.runner("c2")
	l2.set("2026-05-01 10:30:00")
	if _, err := r2.Cancel(ctx, "main", "", "admin:alice", ""); err != nil {
		t.Fatal(err)
	}
	l2.set("2026-05-01 10:32:01")
	r2.Tick(ctx)
	if got := l2.runs()[0]; got.GetId() != run2.GetId() || got.GetResult() != ResultCancelled {
		t.Fatalf("after the clean-up deadline: %v", got)
	}

	// While the scheduler is gated (an older voter would not know the
	// cancel step, and no tick would end it), the cancel ends the run at
	// once, in the older records' words.
	l3, run3 := setupInherited(t)
	l3.notReady = "voter c3 has feature level 0"
	r3 := l3.runner("c2")
	got, err = r3.Cancel(ctx, "main", "", "admin:alice", "")
	if err != nil || got.GetId() != run3.GetId() || got.GetResult() != ResultCancelled || got.GetCancelAt() != nil {
		t.Fatalf("cancel while gated: %v %v", got, err)
	}
}

// TestPolicyEditReordersRetention (adversarial review of the sched branch,
// e): when the cluster's retention changes while a run is in flight (an
// operator keeps the hourly backups 30 days instead of 7 during a long
// run), the run is ordered again with the new retention, so that the
// expiry after it does not delete what the new policy keeps.
func TestPolicyEditReordersRetention(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t) // hourly kept 7 days
	if err := l.Record(ctx, "agent:pg-3", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Step{
		Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "accepted"}}}); err != nil {
		t.Fatal(err)
	}
	r := l.runner("c2")
	l.set("2026-05-01 10:10:00")
	r.StreamOpened(ctx, "main", "pg-3")
	r.Tick(ctx)
	n := len(ordersFor(l, run.GetId()))
	if n != 1 {
		t.Fatalf("%d orders before the edit", n)
	}
	p := tiers(hourly)
	p.Tiers[0].KeepAge = 30 * policy.Day
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: policy.ToProto(p)}); err != nil {
		t.Fatal(err)
	}
	l.set("2026-05-01 10:10:05")
	r.Tick(ctx)
	os := ordersFor(l, run.GetId())
	if len(os) != n+1 || os[n].GetBackup().GetCancel() ||
		os[n].GetBackup().GetRetention().GetTiers()[0].GetKeepAgeMs() != (30*policy.Day).Milliseconds() {
		t.Fatalf("before: no order with the new retention after the policy edit: %v", os)
	}
	if left := os[n].GetBackup().GetTimeoutMs(); left <= 0 || left > (12*time.Hour).Milliseconds() {
		t.Fatalf("repeat's timeout %d ms", left)
	}
	r.Tick(ctx) // unchanged since: no more orders
	if got := len(ordersFor(l, run.GetId())); got != n+1 {
		t.Fatalf("%d orders, want %d", got, n+1)
	}
}

// TestAnswerWhileGated (adversarial review of the sched branch, g): while
// the scheduler is gated (a voter may run a version that does not know
// the records' not_started result, the type taken or the expiry), a final
// answer is not recorded but retried (ErrRetry): an older voter would
// refuse or half-apply it and its state would diverge. A pending answer
// (the step "accepted", which every version knows) is recorded.
func TestAnswerWhileGated(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t)
	r := l.runner("c2")
	l.mu.Lock()
	l.notReady = "voter c3 has feature level 0"
	l.mu.Unlock()
	if ok, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Pending: true,
		Backup: &pgdrv1.BackupReport{RunId: run.GetId()}}); !ok || err != nil {
		t.Fatalf("pending answer while gated: %v %v", ok, err)
	}
	refusal := &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Error: "busy",
		Backup: &pgdrv1.BackupReport{RunId: run.GetId(), NotStarted: true}}
	_, err := r.Answer(ctx, refusal)
	if got := l.last(); got.GetResult() != "" || !errors.Is(err, ErrRetry) {
		t.Fatalf("before: a final answer recorded while gated (%v, err %v), want ErrRetry", got, err)
	}
	l.mu.Lock()
	l.notReady = ""
	l.mu.Unlock()
	if _, err := r.Answer(ctx, refusal); err != nil {
		t.Fatal(err)
	}
	if got := l.last(); got.GetResult() != ResultNotStarted || got.GetAcceptedAt() == nil {
		t.Fatalf("once ready: %v", got)
	}
}

// TestUnsentOrderNotStuck (adversarial review of the sched branch, c): an
// order that could not be written, whose not_started record failed too
// (a Raft write lost), left the run in flight marked as ordered: nothing
// ordered it again and the cluster's backups waited for its whole timeout
// (hours for a full). It is now ordered again on the next tick.
func TestUnsentOrderNotStuck(t *testing.T) {
	ctx := context.Background()
	l := newFakeLeader(t)
	p := tiers(hourly)
	p.UpdatedAt = time.Time{}
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: policy.ToProto(p)}); err != nil {
		t.Fatal(err)
	}
	r := l.runner("c1")
	l.mu.Lock()
	l.noStream, l.failResults = true, true
	l.mu.Unlock()
	l.set("2026-05-01 10:00:01")
	if _, err := r.RunNow(ctx, "main", "hourly", "admin:alice"); err == nil {
		t.Fatal("want the failed record's error")
	}
	run := l.last()
	if run.GetResult() != "" {
		t.Fatalf("run %v", run)
	}
	l.mu.Lock()
	l.noStream, l.failResults = false, false
	l.mu.Unlock()
	l.set("2026-05-01 10:00:06")
	r.Tick(ctx)
	if os := ordersFor(l, run.GetId()); len(os) != 1 {
		t.Fatalf("before: the run in flight whose order was never written is not ordered again (%d orders); it waits for its %s timeout", len(os), time.Duration(run.GetTimeoutMs())*time.Millisecond)
	}
}
