package fsm

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// scanLatest is LatestEvent by a backward scan of the whole history.
func scanLatest(f *FSM, cluster string, kinds ...string) *pgdrv1.HistoryEvent {
	var out *pgdrv1.HistoryEvent
	f.ScanHistoryBack(cluster, func(ev *pgdrv1.HistoryEvent) bool {
		for _, k := range kinds {
			if ev.GetKind() == k {
				out = proto.Clone(ev).(*pgdrv1.HistoryEvent)
				return false
			}
		}
		return true
	})
	return out
}

// TestLatestEventEqualsScan: over a random sequence of events of several
// kinds and clusters, with a history limit small enough that compaction
// drops routine events and decisions, LatestEvent answers what a backward
// scan answers, on the FSM that applied them, on a new one restored from
// its snapshot (a coordinator that joins or takes over as leader) and on
// one that restored an older snapshot and replays the rest of the log.
func TestLatestEventEqualsScan(t *testing.T) {
	kinds := []string{"failover-intent", "failover-result", "manual-failover-intent", "switchover-intent",
		"switchover-result", KindMemberRegistered, KindMemberUpdated}
	questions := [][]string{
		{"failover-intent", "manual-failover-intent"},
		{"failover-intent", "manual-failover-intent", "switchover-intent", "failover-result", "switchover-result"},
		{KindMemberRegistered},
		{"switchover-result"},
		{"no-such-kind"},
	}
	clusters := []string{"a", "b", "c", ""}
	rng := rand.New(rand.NewPCG(18, 5000))
	h := newHarness(t, Options{HistoryLimit: 25})
	var log []*pgdrv1.Command // what h applied, to replay
	var replica *FSM          // restored from a snapshot of h, then fed the same log
	var mid []byte            // an older snapshot
	midAt := 0
	check := func(step int, f *FSM, who string) {
		t.Helper()
		for _, cl := range clusters {
			for _, q := range questions {
				got, want := f.LatestEvent(cl, q...), scanLatest(f, cl, q...)
				if !proto.Equal(got, want) {
					t.Fatalf("step %d, %s: LatestEvent(%q, %v) = %v, a scan finds %v", step, who, cl, q, got, want)
				}
			}
		}
	}
	for step := 0; step < 600; step++ {
		ev := &pgdrv1.HistoryEvent{Kind: kinds[rng.IntN(len(kinds))], Cluster: clusters[rng.IntN(len(clusters))], Node: "n", Epoch: uint64(step)}
		c, err := NewCommand(tRecordEvnt, &pgdrv1.RecordEvent{Event: ev}, "coordinator:c1", t0)
		if err != nil {
			t.Fatal(err)
		}
		h.applyCmd(c)
		log = append(log, c)
		check(step, h.f, "applying FSM")
		switch step {
		case 200:
			replica = New(quietLogger(), Options{HistoryLimit: 25})
			if err := replica.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
				t.Fatal(err)
			}
		case 300:
			mid, midAt = persist(t, h.f), len(log)
		}
		if replica != nil {
			if step > 200 {
				b, _ := Encode(c)
				replica.Apply(&raft.Log{Index: uint64(step + 1), Data: b})
			}
			check(step, replica, "FSM restored from a snapshot")
		}
	}
	// Roll back to the older snapshot and replay the log from there.
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(mid))); err != nil {
		t.Fatal(err)
	}
	check(midAt, h.f, "FSM restored from an older snapshot")
	for i, c := range log[midAt:] {
		b, _ := Encode(c)
		h.f.Apply(&raft.Log{Index: uint64(midAt + i + 1), Data: b})
		check(midAt+i, h.f, "FSM replaying after the older snapshot")
	}
	if !proto.Equal(h.f.State(), replica.State()) {
		t.Fatal("the replayed FSM and the restored one differ")
	}
}
