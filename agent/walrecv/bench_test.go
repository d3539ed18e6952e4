package walrecv

import (
	"os"
	"regexp"
	"testing"
	"time"
)

// TestBenchSynchronousCost (PGDR_BENCH=1): pgbench -c 4 -T 10 against a
// primary with the receiver running, asynchronous and then named in
// synchronous_standby_names: the TPS and latency cost of the synchronous
// receiver, and the receiver keeping up under load (every commit
// acknowledged is in its spool).
func TestBenchSynchronousCost(t *testing.T) {
	if os.Getenv("PGDR_BENCH") == "" {
		t.Skip("set PGDR_BENCH=1")
	}
	e := newEnv(t, map[string]string{"fsync": "on"})
	r, _ := e.start(t, time.Second)
	e.pg.PGBench(t, "-i", "-s", "5", "-q")
	tps := regexp.MustCompile(`tps = ([0-9.]+)`)
	lat := regexp.MustCompile(`latency average = ([0-9.]+ ms)`)
	run := func(what string) {
		out := e.pg.Run(t, "pgbench", "-c", "4", "-j", "2", "-T", "10", "-n")
		t.Logf("%s: tps %s, latency %s", what, tps.FindStringSubmatch(out)[1], lat.FindStringSubmatch(out)[1])
	}
	run("asynchronous receiver")
	e.pg.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = '"+AppName("n1")+"'")
	e.pg.Exec(t, "SELECT pg_reload_conf()")
	waitFor(t, 10*time.Second, "the receiver is synchronous", func() bool {
		return e.pg.QueryString(t, "SELECT coalesce((SELECT sync_state FROM pg_stat_replication WHERE application_name = $1), '')", AppName("n1")) == "sync"
	})
	run("synchronous receiver")
	l := e.lsn(t, "SELECT pg_current_wal_flush_lsn()::text")
	waitFor(t, 10*time.Second, "the receiver caught up", func() bool { return r.Status().Flush >= l })
	t.Logf("status %+v", r.Status())
}
