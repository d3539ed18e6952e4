package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestSlotsDroppedByLeader (issue 21, slot safety): in the lab, a
// pgdr-managed slot left by a removed member on the primary and one left
// on a replica are dropped by the coordinator leader (reported by the
// agents, decided by coordinator/slots, dropped by a DropSlot order) and
// recorded as slot_dropped in the history; a slot of another name is left
// alone, and so is the managed slot of a present member still within
// slots.drop_inactive_after.
func TestSlotsDroppedByLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("lab e2e")
	}
	l := startLab(t)
	for node, sql := range map[string]string{
		"pg-a1": "SELECT pg_create_physical_replication_slot('pgdr_pg_gone', true); SELECT pg_create_physical_replication_slot('users_slot', true); SELECT pg_create_physical_replication_slot('pgdr_pg_b1', true)",
		"pg-a2": "SELECT pg_create_physical_replication_slot('pgdr_pg_b1', false)",
	} {
		if out, err := l.psql(node, sql); err != nil {
			t.Fatalf("%s: %v %s", node, err, out)
		}
	}
	slotsOn := func(node string) (string, error) {
		return l.psql(node, "SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') FROM pg_replication_slots")
	}
	// The grace is a minute and the leader looks every 5 s.
	testutil.WaitFor(t, 4*time.Minute, "the removed member's and the replica's managed slots dropped", func() (bool, error) {
		a1, err := slotsOn("pg-a1")
		if err != nil {
			return false, err
		}
		a2, err := slotsOn("pg-a2")
		if err != nil {
			return false, err
		}
		return a1 == "pgdr_pg_b1,users_slot" && a2 == "", fmt.Errorf("pg-a1 has %q, pg-a2 has %q", a1, a2)
	})
	// The event is recorded once the agent answered the drop.
	dropped := map[string]string{}
	testutil.WaitFor(t, time.Minute, "two slot_dropped events", func() (bool, error) {
		h, err := l.tryHistory()
		if err != nil {
			return false, err
		}
		clear(dropped)
		for _, e := range h {
			if e.Kind == "slot_dropped" {
				dropped[e.Node+"/"+e.Details["slot"]] = e.Details["reason"]
			}
		}
		return len(dropped) >= 2, fmt.Errorf("slot_dropped events: %v", dropped)
	})
	if len(dropped) != 2 || !strings.Contains(dropped["pg-a1/pgdr_pg_gone"], "removed") || !strings.Contains(dropped["pg-a2/pgdr_pg_b1"], "replica") {
		t.Fatalf("slot_dropped events: %v", dropped)
	}
	t.Logf("dropped: %v", dropped)
}
