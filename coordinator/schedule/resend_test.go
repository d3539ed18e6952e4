package schedule

import (
	"context"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// setupInherited records, as leader c1, a run in flight that c1 never
// ordered, and returns the fake leader and the run.
func setupInherited(t *testing.T) (*fakeLeader, *pgdrv1.BackupRun) {
	ctx := context.Background()
	l := newFakeLeader(t)
	p := tiers(hourly)
	p.UpdatedAt = time.Time{}
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: policy.ToProto(p)}); err != nil {
		t.Fatal(err)
	}
	l.set("2026-05-01 10:00:01")
	if err := l.Record(ctx, "coordinator:c1", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Intent{
		Intent: &pgdrv1.BackupRun{Id: "c1-a", Tier: "hourly", Type: "full", Node: "pg-3", TimeoutMs: (12 * time.Hour).Milliseconds()}}}); err != nil {
		t.Fatal(err)
	}
	return l, l.last()
}

// TestResendRetriedUntilWritten (review of issue 16): a new leader's repeat
// of an inherited run that cannot be written (the agent of pg-3 is
// reconnecting) is tried again on the next ticks; it used to be marked
// ordered before the write, so the run waited for its 12 h timeout.
func TestResendRetriedUntilWritten(t *testing.T) {
	ctx := context.Background()
	l, run := setupInherited(t)
	r2 := l.runner("c2")
	l.mu.Lock()
	l.noStream = true
	l.mu.Unlock()
	l.set("2026-05-01 10:01:00")
	r2.Tick(ctx)
	l.mu.Lock()
	l.noStream = false
	l.mu.Unlock()
	for _, now := range []string{"2026-05-01 10:01:05", "2026-05-01 10:30:00", "2026-05-01 20:00:00"} {
		l.set(now)
		r2.Tick(ctx)
	}
	n := 0
	for _, o := range l.orders {
		if o.GetBackup().GetRunId() == run.GetId() {
			n++
		}
	}
	if n == 0 {
		t.Errorf("inherited run never ordered once the agent's stream was back: stalled until its timeout")
	}
}
