package server

import (
	"reflect"
	"testing"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestSlotKeeperRound: the leader counts a slot's unused time from when it
// first saw it unused in fresh reports, forgets it once used or gone, only
// looks at managed physical slots, takes the recorded primary for the
// primary, and does not order the same drop again within slotRetry.
func TestSlotKeeperRound(t *testing.T) {
	s := testServer(t, Options{})
	s.cfg.Slots.DropInactiveAfter.Duration = 30 * time.Minute
	lagCluster(t, s) // members a (primary) and b
	k := &slotKeeper{s: s, unused: map[slotKey]time.Time{}, tried: map[slotKey]time.Time{}}
	t0 := time.Now()
	withSlots := func(r *pgdrv1.HealthReport, slots ...*pgdrv1.ReplicationSlot) *pgdrv1.HealthReport {
		r.ReplicationSlots, r.ReplicationSlotsKnown = slots, true
		return r
	}
	unusedB := &pgdrv1.ReplicationSlot{Name: "pgdr_b", Type: "physical", RetainedBytes: 100 * mib}
	gone := &pgdrv1.ReplicationSlot{Name: "pgdr_c9", Type: "physical"}
	user := &pgdrv1.ReplicationSlot{Name: "debezium", Type: "logical"}
	onReplica := &pgdrv1.ReplicationSlot{Name: "pgdr_a", Type: "physical"}
	names := func(cds []clusterDrops) []string {
		var out []string
		for _, cd := range cds {
			for _, d := range cd.drops {
				out = append(out, d.Server+"/"+d.Name)
			}
		}
		return out
	}
	replicaSlots := []*pgdrv1.ReplicationSlot{onReplica}
	report := func(at time.Time, primarySlots ...*pgdrv1.ReplicationSlot) {
		s.ingestReport(withSlots(writable("a", 600*mib), primarySlots...), at)
		s.ingestReport(withSlots(standby("b", 600*mib), replicaSlots...), at)
	}

	report(t0, unusedB, gone, user)
	if got := names(k.round(t0)); got != nil {
		t.Fatalf("first sight: %v, want nothing (unused since now)", got)
	}
	t1 := t0.Add(slotGrace + time.Second)
	report(t1, unusedB, gone, user)
	if got, want := names(k.round(t1)), []string{"a/pgdr_c9", "b/pgdr_a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after the grace: %v, want %v", got, want)
	}
	t2 := t1.Add(time.Second)
	report(t2, unusedB, gone, user)
	if got := names(k.round(t2)); got != nil {
		t.Fatalf("right after ordering them: %v, want nothing (retry later)", got)
	}
	// The dropped slots are gone; b's receiver comes back for a while:
	// its unused time starts again.
	replicaSlots = nil
	t3 := t0.Add(20 * time.Minute)
	report(t3, &pgdrv1.ReplicationSlot{Name: "pgdr_b", Type: "physical", Active: true})
	k.round(t3)
	t4 := t3.Add(31 * time.Minute)
	report(t4, unusedB)
	if got := names(k.round(t4)); got != nil {
		t.Fatalf("unused for one round after being used: %v", got)
	}
	t5 := t4.Add(30 * time.Minute)
	report(t5, unusedB)
	if got, want := names(k.round(t5)), []string{"a/pgdr_b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("unused past drop_inactive_after: %v, want %v", got, want)
	}
	// A custom receiver slot b's agent reports is b's, not a removed
	// member's: unused past the grace it stays (within drop_inactive_after).
	custom := &pgdrv1.ReplicationSlot{Name: "pgdr_custom", Type: "physical"}
	bReport := withSlots(standby("b", 600*mib))
	bReport.ReceiverSlot = "pgdr_custom"
	t7 := t5.Add(time.Minute)
	s.ingestReport(withSlots(writable("a", 600*mib), custom), t7)
	s.ingestReport(bReport, t7)
	k.round(t7)
	t8 := t7.Add(slotGrace + time.Second)
	s.ingestReport(withSlots(writable("a", 600*mib), custom), t8)
	s.ingestReport(bReport, t8)
	if got := names(k.round(t8)); got != nil {
		t.Fatalf("a member's custom receiver slot: %v, want kept", got)
	}
	// Stale reports are not judged.
	t6 := t8.Add(2 * time.Hour)
	if got := names(k.round(t6)); got != nil {
		t.Fatalf("stale reports: %v", got)
	}
}
