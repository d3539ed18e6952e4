package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func resultEvent(kind, msg string, epoch uint64) *pgdrv1.RecordEvent {
	return &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Cluster: "main", Kind: kind, Node: "pg-a2", Epoch: epoch, Message: msg}}
}

// toEpoch moves cluster main's primary until its epoch is at least epoch
// (the leader records a change's result once the new primary is).
func toEpoch(h *harness, epoch uint64) {
	h.t.Helper()
	for {
		c, _ := h.f.Cluster("main")
		if c.GetEpoch() >= epoch {
			return
		}
		next := "pg-a2"
		if c.GetPrimary() == next {
			next = "pg-a1"
		}
		h.mustApply(tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: next, ExpectedEpoch: c.GetEpoch()})
	}
}

func totals(h *harness) *pgdrv1.ClusterTotals {
	c, _ := h.f.Cluster("main")
	return c.GetTotals()
}

// TestTotalsCountPrimaryChangesAndBackupRuns: completed failovers (manual
// ones too) and switchovers are counted once per epoch, failed ones and
// other events not at all; ended backup runs are counted per tier and
// result with the newest success's end; the totals survive a snapshot and
// go on counting after a restore, and outlive the bounded history.
func TestTotalsCountPrimaryChangesAndBackupRuns(t *testing.T) {
	h := newHarness(t, Options{HistoryLimit: 5})
	baseline(h)
	h.applyStartTotals()
	for _, ev := range []*pgdrv1.RecordEvent{
		resultEvent("failover-result", "done: pg-a2 is primary at epoch 2", 2),
		resultEvent("failover-result", "done: pg-a2 is primary at epoch 2", 2), // a resuming leader
		resultEvent("switchover-result", "failed: pg-a1 did not promote", 3),
		resultEvent("failover-intent", "done", 3),
		resultEvent("switchover-result", "done: pg-a1 is primary at epoch 3", 3),
		resultEvent("manual-failover-result", "done: pg-a2 is primary at epoch 4", 4),
		resultEvent("switchover-result", "done: stale", 1),
	} {
		toEpoch(h, ev.GetEvent().GetEpoch())
		h.mustApply(tRecordEvnt, ev)
	}
	h.mustApply(tBackupRun, intent("r1", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r1", RunOK, ""))
	h.mustApply(tBackupRun, intent("r2", "daily", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("r2", RunFailed, "disk full"))
	h.mustApply(tBackupRun, intent("r3", "hourly", "incr", "pg-a2"))
	h.mustApply(tBackupRun, result("r3", RunTimeout, ""))
	h.mustApply(tBackupRun, intent("r4", "hourly", "incr", "pg-a2"))
	h.mustApply(tBackupRun, result("r4", RunNotStarted, ""))
	h.mustApply(tBackupRun, intent("r5", "hourly", "incr", "pg-a2"))
	h.mustApply(tBackupRun, step("r5", StepSent)) // in flight: not counted
	var okAt time.Time
	for _, r := range runs(h) {
		if r.GetId() == "r1" {
			okAt = r.GetFinishedAt().AsTime()
		}
	}

	check := func(h *harness, when string, failovers, switchovers, dailyOK uint64) {
		t.Helper()
		got := totals(h)
		if got.GetFailovers() != failovers || got.GetSwitchovers() != switchovers || got.GetCountedEpoch() != 4 {
			t.Fatalf("%s: failovers %d switchovers %d counted epoch %d, want %d %d 4", when,
				got.GetFailovers(), got.GetSwitchovers(), got.GetCountedEpoch(), failovers, switchovers)
		}
		want := []*pgdrv1.BackupTierTotals{
			{Tier: "daily", Ok: dailyOK, Failed: 1},
			{Tier: "hourly", Timeout: 1, NotStarted: 1},
		}
		if len(got.GetBackupTiers()) != 2 {
			t.Fatalf("%s: tier totals %v", when, got.GetBackupTiers())
		}
		for i, w := range want {
			g := proto.Clone(got.GetBackupTiers()[i]).(*pgdrv1.BackupTierTotals)
			if w.Tier == "daily" {
				if !g.GetLastSuccess().AsTime().Equal(okAt) && dailyOK == 1 {
					t.Fatalf("%s: daily last success %v, want %v", when, g.GetLastSuccess().AsTime(), okAt)
				}
				g.LastSuccess = nil
			}
			if !proto.Equal(g, w) {
				t.Fatalf("%s: tier totals %v, want %v", when, g, w)
			}
		}
	}
	check(h, "applied", 2, 1, 1)
	if n := len(h.f.History("main", 0, 0)); n > 5 {
		t.Fatalf("history holds %d events, limit 5", n)
	}

	fresh := New(quietLogger(), Options{HistoryLimit: 5})
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	h2 := &harness{t: t, f: fresh, index: h.index}
	check(h2, "restored", 2, 1, 1)
	h2.mustApply(tBackupRun, result("r5", RunOK, ""))
	toEpoch(h2, 5)
	h2.mustApply(tRecordEvnt, resultEvent("switchover-result", "done: pg-a1 is primary at epoch 5", 5))
	if got := totals(h2); got.GetSwitchovers() != 2 || got.GetBackupTiers()[1].GetOk() != 1 {
		t.Fatalf("after restore: %v", got)
	}
}

// TestTierTotalsBounded: at most MaxTierTotals tiers are counted; a new
// tier evicts one the cluster's policy does not have, never a policy tier.
func TestTierTotalsBounded(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.applyStartTotals()
	for i := 0; i < MaxTierTotals+3; i++ {
		id := fmt.Sprintf("r%d", i)
		h.mustApply(tBackupRun, intent(id, fmt.Sprintf("manual%d", i), "full", "pg-a2"))
		h.mustApply(tBackupRun, result(id, RunOK, ""))
	}
	h.mustApply(tBackupRun, intent("d", "daily", "full", "pg-a2")) // a tier of the default policy
	h.mustApply(tBackupRun, result("d", RunFailed, ""))
	h.mustApply(tBackupRun, intent("e", "extra", "full", "pg-a2"))
	h.mustApply(tBackupRun, result("e", RunFailed, ""))
	tiers := totals(h).GetBackupTiers()
	if len(tiers) != MaxTierTotals {
		t.Fatalf("%d tiers counted, want %d", len(tiers), MaxTierTotals)
	}
	seen := map[string]bool{}
	for _, x := range tiers {
		seen[x.GetTier()] = true
	}
	if !seen["daily"] || !seen["extra"] || seen["manual0"] {
		t.Fatalf("tiers counted: %v", seen)
	}
}
