package health

import (
	"context"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

type validLease struct{}

func (validLease) Serving(time.Time) (bool, string) { return true, "" }

// TestReplicationGated: with lease-gated commits PostgreSQL's own
// synchronous_standby_names names the gate alone; the report shows the
// coordinator's value instead, leaves the gate's walsender out and gives
// the requested standby the sync_state that value gives it.
func TestReplicationGated(t *testing.T) {
	pg := pgtest.New(t, pgtest.Options{Conf: map[string]string{"max_wal_senders": "10"}})
	pg.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := pg.Conn(t)
	const requested = `FIRST 1 ("sb1", "sb2")`
	if err := commitgate.Apply(ctx, conn, requested, commitgate.DefaultAppName, true); err != nil {
		t.Fatal(err)
	}
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	// The gate, and a replication client standing for standby sb1.
	go commitgate.New(commitgate.Config{DSN: pg.DSN()}, validLease{}, nil).Run(gctx)
	go commitgate.New(commitgate.Config{DSN: pg.DSN(), AppName: "sb1"}, validLease{}, nil).Run(gctx)
	c := NewChecker(Config{Cluster: "main", Node: "pg-a1", PGData: pg.PGData, DSN: pg.DSN(), CommitGate: commitgate.DefaultAppName}, nil)
	defer c.Close(ctx)
	var r *pgdrv1.HealthReport
	for end := time.Now().Add(time.Minute); ; {
		r = c.Check(ctx)
		if r.SynchronousStandbyNames == requested && len(r.Replicas) == 1 && r.Replicas[0].GetFlushLsn() != 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("report: synchronous_standby_names %q, replicas %v; want %q and sb1 alone", r.SynchronousStandbyNames, r.Replicas, requested)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rs := r.Replicas[0]; rs.ApplicationName != "sb1" || rs.SyncState != "sync" {
		t.Fatalf("replica %s sync_state %q, want sb1 sync", rs.ApplicationName, rs.SyncState)
	}
	if got := pg.QueryString(t, "SELECT current_setting('synchronous_standby_names')"); !commitgate.IsGate(got, commitgate.DefaultAppName) {
		t.Fatalf("PostgreSQL's own setting is %q, want the gate alone", got)
	}
}
