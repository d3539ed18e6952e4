package backuprun

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/repo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func cancelOrder(id, why string) *pgdrv1.AgentCommand {
	return &pgdrv1.AgentCommand{Id: id + "-cancel", Cluster: "main", Node: "pg-a2",
		Kind: &pgdrv1.AgentCommand_Backup{Backup: &pgdrv1.Backup{RunId: id, Cancel: true, CancelReason: why}}}
}

// TestAnswersNameTheRunAndRefusalsAreNotStarted (review of issue 16, 1
// and 2): every answer carries the run id; a refusal before the start
// (busy) says not_started, a bad order does not.
func TestAnswersNameTheRunAndRefusalsAreNotStarted(t *testing.T) {
	h := newHarness(t, nil)
	res := h.r.Start(h.ctx, order("run1", "full", time.Hour))
	if res.GetBackup().GetRunId() != "run1" || res.GetBackup().GetNotStarted() {
		t.Fatalf("pending answer %v", res)
	}
	h.take.waitStarted(t)
	if res := h.r.Start(h.ctx, order("run2", "full", time.Hour)); res.GetBackup().GetRunId() != "run2" || !res.GetBackup().GetNotStarted() {
		t.Fatalf("busy refusal %v, want not_started", res)
	}
	if res := h.r.Start(h.ctx, order("run3", "snapshot", time.Hour)); res.GetBackup().GetRunId() != "run3" || res.GetBackup().GetNotStarted() {
		t.Fatalf("bad order %v, want a failure, not not_started", res)
	}
	h.take.finish <- takeOutcome{m: &backup.Manifest{ID: "B", Type: backup.TypeFull}}
	if got := h.comp.waitResults(t, 1)[0]; got.GetBackup().GetRunId() != "run1" || got.GetBackup().GetType() != "full" {
		t.Fatalf("final answer %v", got)
	}
}

// TestTypeTakenReported (review of issue 16, 7): an incr that became a
// full reports full.
func TestTypeTakenReported(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Start(h.ctx, order("run1", "incr", time.Hour))
	h.take.waitStarted(t)
	h.take.finish <- takeOutcome{m: &backup.Manifest{ID: "B", Type: backup.TypeFull, TypeReason: "no usable parent"}}
	if got := h.comp.waitResults(t, 1)[0]; !got.GetOk() || got.GetBackup().GetType() != "full" {
		t.Fatalf("final answer %v, want type full", got)
	}
}

// TestCancelOrder (review of issue 16, 3): a cancel order stops a running
// backup (its context ends with errCancelled), is answered pending, and
// the run completes as cancelled once Take returned; a repeat of the
// cancel then gets the result; a cancel for a run this agent never had
// keeps that run from ever starting.
func TestCancelOrder(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Start(h.ctx, order("run1", "full", time.Hour))
	c := h.take.waitStarted(t)
	res := h.r.Start(h.ctx, cancelOrder("run1", "over its timeout"))
	if !res.GetPending() || res.GetBackup().GetRunId() != "run1" {
		t.Fatalf("answer to the cancel %v, want pending", res)
	}
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the backup's context was not cancelled")
	}
	if !errors.Is(context.Cause(c.ctx), errCancelled) {
		t.Fatalf("cancelled with %v", context.Cause(c.ctx))
	}
	got := h.comp.waitResults(t, 1)[0]
	if got.GetOk() || got.GetId() != "run1" || !strings.Contains(got.GetError(), "cancelled by the coordinator (over its timeout)") {
		t.Fatalf("final answer %v", got)
	}
	if again := h.r.Start(h.ctx, cancelOrder("run1", "again")); again.GetPending() || !strings.Contains(again.GetError(), "cancelled by the coordinator") {
		t.Fatalf("repeat of the cancel %v, want the result", again)
	}
	if res := h.r.Start(h.ctx, cancelOrder("ghost", "operator")); res.GetPending() || !res.GetBackup().GetNotStarted() {
		t.Fatalf("cancel of an unknown run %v", res)
	}
	if res := h.r.Start(h.ctx, order("ghost", "full", time.Hour)); res.GetPending() {
		t.Fatalf("a cancelled run started later: %v", res)
	}
	if n := h.take.nCalls(); n != 1 {
		t.Fatalf("%d backups taken", n)
	}
}

// TestExpiryAfterSuccess (issue 16 item 3): an order with a retention
// runs the expiry after a successful backup, on the order's repositories
// with the tiers' rules and the PITR window, and reports its outcome; a
// failed expiry is reported and the backup stands; a failed backup runs
// no expiry.
func TestExpiryAfterSuccess(t *testing.T) {
	var calls []expire.Spec
	var repoNames []string
	fail := false
	h := newHarness(t, func(d *Deps) {
		d.Expire = func(_ context.Context, repos, all []repo.Repo, spec expire.Spec) ([]expire.Result, error) {
			calls = append(calls, spec)
			repoNames = names(repos)
			if fail {
				return []expire.Result{{Repo: "dr", Deleted: []string{"x"}}}, errors.New("repository local: signing not configured")
			}
			return []expire.Result{{Repo: "dr", Deleted: []string{"a", "b"}, WALDeleted: 7, Objects: 20}}, nil
		}
	})
	rt := &pgdrv1.BackupRetention{PitrWindowMs: (24 * time.Hour).Milliseconds(), Tiers: []*pgdrv1.TierRetention{
		{Tier: "daily", KeepCount: 2}, {Tier: "weekly", KeepAgeMs: (84 * 24 * time.Hour).Milliseconds()}}}
	withRet := func(c *pgdrv1.AgentCommand) *pgdrv1.AgentCommand { c.GetBackup().Retention = rt; return c }
	h.r.Start(h.ctx, withRet(order("run1", "full", time.Hour, "dr")))
	h.take.waitStarted(t)
	h.take.finish <- takeOutcome{m: manifest("B1")}
	got := h.comp.waitResults(t, 1)[0]
	e := got.GetBackup().GetExpiry()
	if !got.GetOk() || e.GetBackupsDeleted() != 2 || e.GetWalDeleted() != 7 || e.GetObjectsDeleted() != 20 || e.GetError() != "" {
		t.Fatalf("answer %v", got)
	}
	if len(calls) != 1 || calls[0].PITRWindow != 24*time.Hour || calls[0].Tiers["daily"].Count != 2 ||
		calls[0].Tiers["weekly"].Age != 84*24*time.Hour || len(repoNames) != 1 || repoNames[0] != "dr" {
		t.Fatalf("expire called with %+v on %v", calls, repoNames)
	}
	fail = true
	h.r.Start(h.ctx, withRet(order("run2", "full", time.Hour)))
	h.take.waitStarted(t)
	h.take.finish <- takeOutcome{m: manifest("B2")}
	got = h.comp.waitResults(t, 2)[1]
	if !got.GetOk() || !strings.Contains(got.GetBackup().GetExpiry().GetError(), "signing not configured") || got.GetBackup().GetBackupId() != "B2" {
		t.Fatalf("answer with a failed expiry %v", got)
	}
	h.r.Start(h.ctx, withRet(order("run3", "full", time.Hour)))
	h.take.waitStarted(t)
	h.take.finish <- takeOutcome{err: errors.New("disk full")}
	got = h.comp.waitResults(t, 3)[2]
	if got.GetOk() || got.GetBackup().GetExpiry() != nil || len(calls) != 2 {
		t.Fatalf("a failed backup ran expiry: %v (%d calls)", got, len(calls))
	}
}
