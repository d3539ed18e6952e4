package fsm

import (
	"bytes"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestTotalsSameOnEveryNodeAcrossUpgrade: coordinators upgrade one at a
// time, each restoring the snapshot its older binary took (no totals) at
// its own index and applying the log from there. Every node must still
// hold the same totals (the replicated state is the same on every node,
// and the counters a new leader serves do not jump back): node a's older
// snapshot is at the start, node b's after a failover and a backup run.
func TestTotalsSameOnEveryNodeAcrossUpgrade(t *testing.T) {
	before := func(h *harness) {
		baseline(h)
		toEpoch(h, 2)
		h.mustApply(tRecordEvnt, resultEvent("failover-result", "done: pg-a2 is primary at epoch 2", 2))
		h.mustApply(tBackupRun, intent("r1", "daily", "full", "pg-a2"))
		h.mustApply(tBackupRun, result("r1", RunOK, ""))
	}
	after := func(h *harness) {
		h.applyStartTotals()
		toEpoch(h, 3)
		h.mustApply(tRecordEvnt, resultEvent("switchover-result", "done: pg-a1 is primary at epoch 3", 3))
		h.mustApply(tBackupRun, intent("r2", "daily", "full", "pg-a2"))
		h.mustApply(tBackupRun, result("r2", RunFailed, ""))
	}
	// oldSnapshot restores what an older binary's snapshot of h holds.
	oldSnapshot := func(h *harness) *harness {
		st := &pgdrv1.State{}
		if err := proto.Unmarshal(bytes.TrimPrefix(persist(t, h.f), []byte(snapshotHeader)), st); err != nil {
			t.Fatal(err)
		}
		for _, cl := range st.GetClusters() {
			cl.Totals = nil
		}
		stripNewState(st)
		body, err := proto.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		f := New(quietLogger(), Options{})
		if err := f.Restore(io.NopCloser(bytes.NewReader(append([]byte(snapshotHeader), body...)))); err != nil {
			t.Fatal(err)
		}
		return &harness{t: t, f: f, index: h.index}
	}

	a := newHarness(t, Options{}) // upgraded from a snapshot taken before everything below
	a = oldSnapshot(a)
	before(a)
	after(a)

	b := newHarness(t, Options{}) // upgraded from a snapshot taken after before()
	before(b)
	b = oldSnapshot(b)
	after(b)

	ta, tb := totals(a), totals(b)
	if !proto.Equal(ta, tb) {
		t.Fatalf("totals differ between nodes:\n a: %v\n b: %v", ta, tb)
	}
	if ta.GetSwitchovers() != 1 || ta.GetFailovers() != 0 || len(ta.GetBackupTiers()) != 1 || ta.GetBackupTiers()[0].GetFailed() != 1 {
		t.Fatalf("totals %v, want the switchover and the failed run counted after counting started", ta)
	}
	a.applyStartTotals() // again: nothing reset
	if !proto.Equal(totals(a), tb) {
		t.Fatalf("a second StartTotals changed the totals: %v", totals(a))
	}
}

// applyStartTotals applies the command that starts counting.
func (h *harness) applyStartTotals() {
	h.t.Helper()
	h.mustApply(pgdrv1.CommandType_COMMAND_TYPE_START_TOTALS, &pgdrv1.StartTotals{})
}

// stripNewState drops what an older binary's snapshot lacks.
func stripNewState(st *pgdrv1.State) { st.TotalsSinceIndex = 0 }

// TestTotalsIgnoreFutureEpoch: a "done" result at an epoch the cluster has
// not reached (a malformed or forged RecordEvent) is not counted and does
// not stop the counting of the real changes that follow.
func TestTotalsIgnoreFutureEpoch(t *testing.T) {
	h := newHarness(t, Options{})
	baseline(h)
	h.applyStartTotals()
	c, _ := h.f.Cluster("main")
	h.mustApply(tRecordEvnt, resultEvent("failover-result", "done: forged", c.GetEpoch()+1000))
	h.mustApply(tRecordEvnt, resultEvent("switchover-result", "done: pg-a1 is primary", c.GetEpoch()))
	if got := totals(h); got.GetFailovers() != 0 || got.GetSwitchovers() != 1 || got.GetCountedEpoch() != c.GetEpoch() {
		t.Fatalf("totals %v, want the switchover at epoch %d counted and nothing else", got, c.GetEpoch())
	}
}
