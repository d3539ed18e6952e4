package health

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestReplicaTimelineAfterNewPrimaryDies: a replica re-pointed to a newly
// promoted primary receives WAL on the new timeline, then that primary dies
// before any check saw the WAL receiver on it (a fresh Checker, as after an
// agent restart, or a round that fell just before the receiver switched).
// The replica holds timeline 2 WAL and must report timeline 2: reporting
// pg_control's timeline 1 (no restartpoint has run on 2) makes the
// coordinator refuse it as "timeline 1 behind 2", and with the primary gone
// no restartpoint ever comes — the cluster stays without a primary.
func TestReplicaTimelineAfterNewPrimaryDies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	p := pgtest.New(t, pgtest.Options{})
	p.Start(t)
	replica := func() *pgtest.Cluster {
		r := pgtest.Empty(t, pgtest.Options{})
		r.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(p.Port), "-U", "postgres",
			"-D", r.PGData, "-R", "-X", "stream", "-c", "fast", "--no-sync")
		r.AppendConf(t, r.LocalConf())
		r.Start(t)
		return r
	}
	r1, r2 := replica(), replica()
	p.Exec(t, "CREATE TABLE t AS SELECT 1 AS i")
	testutil.WaitFor(t, 60*time.Second, "both replicas to replay the table", func() (bool, error) {
		a := r1.QueryString(t, "SELECT count(*)::text FROM pg_class WHERE relname = 't'")
		b := r2.QueryString(t, "SELECT count(*)::text FROM pg_class WHERE relname = 't'")
		return a == "1" && b == "1", fmt.Errorf("r1 %s, r2 %s", a, b)
	})
	p.Stop(t, "fast")
	r1.Run(t, "pg_ctl", "promote", "-w", "-D", r1.PGData)
	r2.Exec(t, fmt.Sprintf("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=r2'", r1.Port))
	r2.Exec(t, "SELECT pg_reload_conf()")
	testutil.WaitFor(t, 60*time.Second, "r2 to receive timeline 2 WAL", func() (bool, error) {
		r1.Exec(t, "INSERT INTO t VALUES (2)")
		got := r2.QueryString(t, "SELECT coalesce(max(received_tli), 0)::text FROM pg_stat_wal_receiver")
		return got == "2", fmt.Errorf("received_tli %s", got)
	})
	r1.Stop(t, "immediate")
	testutil.WaitFor(t, 60*time.Second, "r2's WAL receiver to stop streaming", func() (bool, error) {
		got := r2.QueryString(t, "SELECT count(*)::text FROM pg_stat_wal_receiver WHERE status = 'streaming'")
		return got == "0", fmt.Errorf("%s streaming receivers", got)
	})

	c := NewChecker(Config{Cluster: "main", Node: "r2", PGData: r2.PGData, DSN: r2.DSN()}, nil)
	defer c.Close(context.Background())
	r := c.Check(context.Background())
	if !r.InRecovery || r.Error != "" {
		t.Fatalf("r2 report: %v", r)
	}
	if r.Timeline != 2 {
		t.Fatalf("r2 holds timeline 2 WAL but reports timeline %d", r.Timeline)
	}
}
