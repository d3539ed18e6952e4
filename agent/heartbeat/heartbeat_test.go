package heartbeat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// node is one real PostgreSQL 15 server with the agent's checker and, when
// write is set, a heartbeat writer as the daemon wires them.
type node struct {
	pg      *pgtest.Cluster
	checker *health.Checker
	writer  *Writer
	latest  *pgdrv1.HealthReport
}

func newNode(t *testing.T, pg *pgtest.Cluster, name string, write bool) *node {
	t.Helper()
	n := &node{pg: pg}
	hc := health.Config{Cluster: "main", Node: name, PGData: pg.PGData, DSN: pg.DSN()}
	if write {
		n.writer = New(Config{DSN: pg.DSN(), Node: name, PGData: pg.PGData, Interval: 200 * time.Millisecond},
			Deps{Report: func() *pgdrv1.HealthReport { return n.latest }})
		hc.Heartbeat = func() (time.Time, time.Time, time.Duration) {
			l, run := n.writer.Last()
			return l, run, n.writer.Interval()
		}
		t.Cleanup(n.writer.close)
	}
	n.checker = health.NewChecker(hc, nil)
	t.Cleanup(func() { n.checker.Close(context.Background()) })
	return n
}

// check runs a round of checks and keeps its report as the latest.
func (n *node) check(t *testing.T) *pgdrv1.HealthReport {
	t.Helper()
	n.latest = n.checker.Check(context.Background())
	if n.latest.Error != "" {
		t.Fatalf("health check: %s", n.latest.Error)
	}
	return n.latest
}

func newStandby(t *testing.T, primary *pgtest.Cluster, conf map[string]string) *pgtest.Cluster {
	t.Helper()
	sb := pgtest.Empty(t, pgtest.Options{})
	sb.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(primary.Port), "-U", "postgres",
		"-D", sb.PGData, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	sb.AppendConf(t, sb.LocalConf())
	sb.AppendConf(t, conf)
	sb.Start(t)
	return sb
}

// TestHeartbeatPrimaryAndReplica: the primary's writer creates pgdr.heartbeat
// and commits the row; the primary reports its last acknowledged
// heartbeat, the replica the replayed one, and neither report's checks
// fail before the table exists.
func TestHeartbeatPrimaryAndReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	p := newNode(t, pg, "pg-a1", true)
	sb := newStandby(t, pg, map[string]string{"hot_standby": "on"})
	r := newNode(t, sb, "pg-a2", true)

	// No table yet: no heartbeat, and no failure either.
	if rep := p.check(t); rep.HeartbeatTime != nil || rep.HeartbeatIntervalMs != 200 {
		t.Fatalf("primary before the first heartbeat: %v", rep)
	}
	if rep := r.check(t); rep.HeartbeatTime != nil || rep.HeartbeatIntervalMs != 0 {
		t.Fatalf("replica before the first heartbeat: %v", rep)
	}
	if !p.writer.Beat(ctx) {
		t.Fatal("the primary's first heartbeat was not committed")
	}
	first := last(p.writer)
	if got := pg.QueryString(t, "SELECT node || ' ' || (clock_timestamp() - at < interval '10 s')::text FROM pgdr.heartbeat"); got != "pg-a1 true" {
		t.Fatalf("pgdr.heartbeat holds %q", got)
	}
	if !p.writer.Beat(ctx) || !last(p.writer).After(first) {
		t.Fatalf("the second heartbeat did not advance: %s then %s", first, last(p.writer))
	}
	if _, run := p.writer.Last(); !run.Equal(first) {
		t.Fatalf("the run of heartbeats starts at %s, want the first %s", run, first)
	}
	rep := p.check(t)
	if rep.GetHeartbeatTime() == nil || !rep.GetHeartbeatTime().AsTime().Equal(last(p.writer)) || rep.HeartbeatAgeMs < 0 || rep.HeartbeatAgeMs > 10000 ||
		rep.HeartbeatRunMs != last(p.writer).Sub(first).Milliseconds() {
		t.Fatalf("primary report: heartbeat %v age %d ms, want %s", rep.GetHeartbeatTime().AsTime(), rep.HeartbeatAgeMs, last(p.writer))
	}

	// The replica's writer writes nothing (it is in recovery); its checks
	// read the replayed row.
	if r.check(t); r.writer.Beat(ctx) || !last(r.writer).IsZero() {
		t.Fatal("a replica's writer committed a heartbeat")
	}
	want := last(p.writer)
	testutil.WaitFor(t, 30*time.Second, "the replica to replay the heartbeat", func() (bool, error) {
		rep := r.check(t)
		return rep.GetHeartbeatTime() != nil && rep.GetHeartbeatTime().AsTime().Equal(want), fmt.Errorf("replica reports %v, want %s", rep.GetHeartbeatTime().AsTime(), want)
	})
}

// TestHeartbeatOffAndFenced: without a writer no heartbeat is written or
// reported; a fenced primary writes none and forgets the last one.
func TestHeartbeatOffAndFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)

	off := newNode(t, pg, "pg-a1", false)
	if rep := off.check(t); rep.HeartbeatTime != nil || rep.HeartbeatIntervalMs != 0 {
		t.Fatalf("heartbeat off: report %v", rep)
	}
	if got := pg.QueryString(t, "SELECT (to_regclass('pgdr.heartbeat') IS NULL)::text"); got != "true" {
		t.Fatal("pgdr.heartbeat created with the heartbeat off")
	}

	n := newNode(t, pg, "pg-a1", true)
	n.check(t)
	if !n.writer.Beat(ctx) {
		t.Fatal("no heartbeat committed")
	}
	before := pg.QueryString(t, "SELECT at::text FROM pgdr.heartbeat")
	if err := health.WriteFenced(pg.PGData, health.FenceInfo{Node: "pg-a1", Reason: "test", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if n.writer.Beat(ctx) {
		t.Fatal("a fenced primary committed a heartbeat")
	}
	if after := pg.QueryString(t, "SELECT at::text FROM pgdr.heartbeat"); after != before || !last(n.writer).IsZero() {
		t.Fatalf("fenced: row %s -> %s, last %s", before, after, last(n.writer))
	}
	if err := health.RemoveFenced(pg.PGData); err != nil {
		t.Fatal(err)
	}
	n.latest.Fenced = true // the report still says fenced
	if n.writer.Beat(ctx) {
		t.Fatal("a primary reported fenced committed a heartbeat")
	}
}

// TestHeartbeatStuckOnSyncStandbyBlocksNothingElse: with a synchronous
// standby that never connects, a heartbeat's commit waits; it gives up
// within its timeout without counting as acknowledged, and the health
// checks, on their own connection, carry on meanwhile.
func TestHeartbeatStuckOnSyncStandbyBlocksNothingElse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	n := newNode(t, pg, "pg-a1", true)
	n.check(t)
	if !n.writer.Beat(ctx) {
		t.Fatal("no heartbeat committed")
	}
	good := last(n.writer)
	pg.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
	pg.Exec(t, "SELECT pg_reload_conf()")
	testutil.WaitFor(t, 10*time.Second, "the reload to reach new sessions", func() (bool, error) {
		v := pg.QueryString(t, "SHOW synchronous_standby_names")
		return v == "nobody", fmt.Errorf("synchronous_standby_names is %q", v)
	})

	done := make(chan bool, 1)
	start := time.Now()
	go func() { done <- n.writer.Beat(ctx) }()
	// The checks answer while the heartbeat waits.
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		rep := n.checker.Check(ctx)
		if rep.Error != "" || !rep.Connectable || time.Since(t0) > 2*time.Second {
			t.Fatalf("a round of checks during a stuck heartbeat took %s: %v", time.Since(t0), rep)
		}
	}
	select {
	case ok := <-done:
		if ok {
			t.Fatal("a heartbeat no synchronous standby confirmed counted as acknowledged")
		}
	case <-time.After(n.writer.cfg.Timeout() + 10*time.Second):
		t.Fatal("the stuck heartbeat did not give up within its timeout")
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("the heartbeat returned after %s: it did not wait for the standby", took)
	}
	if !last(n.writer).Equal(good) {
		t.Fatalf("last heartbeat moved to %s on a commit not confirmed", last(n.writer))
	}
	if rep := n.checker.Check(ctx); rep.GetHeartbeatTime() == nil || !rep.GetHeartbeatTime().AsTime().Equal(good) {
		t.Fatalf("report during the stall: %v, want the last acknowledged %s", rep.GetHeartbeatTime().AsTime(), good)
	}
	if log := pg.Log(); !strings.Contains(log, "canceling wait for synchronous replication") {
		t.Logf("server log has no cancelled wait (the context may have ended first)")
	}
}

func last(w *Writer) time.Time {
	l, _ := w.Last()
	return l
}

// TestHeartbeatWithoutCreateOnDatabase: an agent role that may not create
// schemas in its database writes the heartbeat into a table the DBA
// created and granted (CREATE SCHEMA IF NOT EXISTS checks the privilege
// before it looks for the schema, so it must not be run when the table is
// there); without the table, or without a grant on it, its failure is
// retried at most once a minute instead of an error in the server's log
// every interval.
func TestHeartbeatWithoutCreateOnDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	pg.Exec(t, "CREATE ROLE hb LOGIN")
	dsn := strings.Replace(pg.DSN(), "user=postgres", "user=hb", 1)

	var latest *pgdrv1.HealthReport
	newWriter := func() *Writer {
		w := New(Config{DSN: dsn, Node: "pg-a1", PGData: pg.PGData, Interval: 200 * time.Millisecond},
			Deps{Report: func() *pgdrv1.HealthReport { return latest }})
		t.Cleanup(w.close)
		return w
	}
	n := newNode(t, pg, "pg-a1", false)
	latest = n.check(t)

	// No table, no right to create it: no heartbeat, and the creation is
	// not attempted again at every interval.
	w := newWriter()
	for i := 0; i < 5; i++ {
		if w.Beat(ctx) {
			t.Fatal("a heartbeat committed without its table")
		}
	}
	if got := strings.Count(pg.Log(), "permission denied for database"); got > 1 {
		t.Fatalf("%d permission errors in the server log for 5 heartbeats, want at most 1", got)
	}

	// The table created, the role not granted it yet: likewise.
	pg.Exec(t, `CREATE SCHEMA pgdr;
CREATE TABLE pgdr.heartbeat (id int PRIMARY KEY CHECK (id = 1), at timestamptz NOT NULL, node text NOT NULL);
GRANT USAGE ON SCHEMA pgdr TO hb`)
	w = newWriter()
	for i := 0; i < 5; i++ {
		if w.Beat(ctx) {
			t.Fatal("a heartbeat committed without the right to")
		}
	}
	if got := strings.Count(pg.Log(), "permission denied for table heartbeat"); got > 1 {
		t.Fatalf("%d permission errors in the server log for 5 heartbeats into a table not granted, want at most 1", got)
	}

	pg.Exec(t, "GRANT SELECT, INSERT, UPDATE ON pgdr.heartbeat TO hb")
	w = newWriter()
	if !w.Beat(ctx) {
		t.Fatalf("no heartbeat committed into the granted table; server log:\n%s", pg.Log())
	}
	if got := pg.QueryString(t, "SELECT node FROM pgdr.heartbeat"); got != "pg-a1" {
		t.Fatalf("pgdr.heartbeat holds %q", got)
	}
}

// TestHeartbeatReadWithoutGrant: an agent that reads the heartbeat (a
// replica's, or a primary's with the heartbeat off) with a role not
// granted the table reads it at most once a minute, not with an error in
// the server's log every round of checks.
func TestHeartbeatReadWithoutGrant(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	pg.Exec(t, `CREATE ROLE hb LOGIN IN ROLE pg_monitor;
CREATE SCHEMA pgdr;
CREATE TABLE pgdr.heartbeat (id int PRIMARY KEY CHECK (id = 1), at timestamptz NOT NULL, node text NOT NULL);
GRANT USAGE ON SCHEMA pgdr TO hb`)
	dsn := strings.Replace(pg.DSN(), "user=postgres", "user=hb", 1)
	c := health.NewChecker(health.Config{Cluster: "main", Node: "pg-a2", PGData: pg.PGData, DSN: dsn}, nil)
	t.Cleanup(func() { c.Close(context.Background()) })
	for i := 0; i < 5; i++ {
		if rep := c.Check(ctx); !rep.Connectable {
			t.Fatalf("check: %v", rep)
		}
	}
	if got := strings.Count(pg.Log(), "permission denied for table heartbeat"); got > 1 {
		t.Fatalf("%d permission errors in the server log for 5 rounds of checks, want at most 1", got)
	}
	pg.Exec(t, "GRANT SELECT ON pgdr.heartbeat TO hb; INSERT INTO pgdr.heartbeat VALUES (1, now(), 'pg-a1')")
	c = health.NewChecker(health.Config{Cluster: "main", Node: "pg-a2", PGData: pg.PGData, DSN: dsn}, nil)
	t.Cleanup(func() { c.Close(context.Background()) })
	if rep := c.Check(ctx); rep.GetHeartbeatTime() == nil {
		t.Fatalf("no heartbeat read once granted: %v", rep)
	}
}
