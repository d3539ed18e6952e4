package health

import (
	"context"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestCheckReplicationSlots: the report lists the server's slots with the
// WAL each retains, growing as WAL is written past an unused slot.
func TestCheckReplicationSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	c := NewChecker(Config{Cluster: "main", Node: "pg-a1", PGData: pg.PGData, DSN: pg.DSN()}, nil)
	defer c.Close(context.Background())
	ctx := context.Background()
	r := c.Check(ctx)
	if !r.ReplicationSlotsKnown || len(r.ReplicationSlots) != 0 {
		t.Fatalf("no slots yet: known %v, %v", r.ReplicationSlotsKnown, r.ReplicationSlots)
	}
	pg.Exec(t, "SELECT pg_create_physical_replication_slot('pgdr_pg_b1', true)")
	r = c.Check(ctx)
	if len(r.ReplicationSlots) != 1 {
		t.Fatalf("slots %v", r.ReplicationSlots)
	}
	s := r.ReplicationSlots[0]
	if s.Name != "pgdr_pg_b1" || s.Type != "physical" || s.Active || s.RestartLsn == 0 || s.WalStatus != "reserved" {
		t.Fatalf("slot %v", s)
	}
	pg.Exec(t, "CREATE TABLE t AS SELECT generate_series(1, 100000) i")
	r2 := c.Check(ctx)
	if r2.Error != "" || len(r2.ReplicationSlots) != 1 || r2.ReplicationSlots[0].RetainedBytes <= s.RetainedBytes+1<<20 {
		t.Fatalf("retained WAL did not grow past %d by 1 MiB: %v (%s)", s.RetainedBytes, r2.ReplicationSlots, r2.Error)
	}
}
