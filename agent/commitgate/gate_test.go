package commitgate_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/lease"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// childEnv makes the test binary run a gate (TestMain) instead of the
// tests: the DSN to gate, and how long from the child's start its lease
// is valid (ms). A gate in a process of its own can be killed and
// frozen while the test looks on.
const (
	childEnv      = "PGDR_COMMITGATE_CHILD_DSN"
	childValidEnv = "PGDR_COMMITGATE_CHILD_VALID_MS"
)

func TestMain(m *testing.M) {
	if dsn := os.Getenv(childEnv); dsn != "" {
		ms, _ := strconv.Atoi(os.Getenv(childValidEnv))
		g := commitgate.New(commitgate.Config{DSN: dsn}, untilLease{until: time.Now().Add(time.Duration(ms) * time.Millisecond)}, nil)
		fmt.Println("gate running")
		g.Run(context.Background())
		return
	}
	os.Exit(m.Run())
}

// untilLease is valid until a fixed instant on the monotonic clock.
type untilLease struct{ until time.Time }

func (u untilLease) Serving(now time.Time) (bool, string) {
	if now.Before(u.until) {
		return true, ""
	}
	return false, "expired"
}

// gatedServer is a PostgreSQL 15 whose synchronous_standby_names names
// the gate.
func gatedServer(t *testing.T, ssn string) *pgtest.Cluster {
	t.Helper()
	conf := map[string]string{"max_wal_senders": "10", "wal_level": "replica"}
	if ssn != "" {
		conf["synchronous_standby_names"] = "'" + ssn + "'"
	}
	pg := pgtest.New(t, pgtest.Options{Conf: conf})
	pg.Start(t)
	return pg
}

// grantedLease is the agent's real lease, granted at now with ttl and
// margin: it is valid until now + ttl - margin.
func grantedLease(ttl, margin time.Duration) (*lease.Holder, time.Time) {
	now := time.Now()
	l := lease.NewLease(now, ttl, margin)
	l.Answer("n1", 1, now, &pgdrv1.RenewLeaseResponse{Granted: true, Epoch: 1})
	return lease.NewHolder(l), l.Deadline()
}

// runGate runs a gate on pg, on a lease granted now with ttl and margin,
// until the test ends.
func runGate(t *testing.T, pg *pgtest.Cluster, ttl, margin time.Duration) (*lease.Holder, time.Time, *commitgate.Gate) {
	held, deadline := grantedLease(ttl, margin)
	g := commitgate.New(commitgate.Config{DSN: pg.DSN()}, held, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go g.Run(ctx)
	return held, deadline, g
}

// client is a connection of its own whose one write runs in the
// background (start); the test's clean-up stops the server at once
// (immediate) if the write is still waiting, so that it returns before
// the connection is closed.
type client struct {
	conn     *pgx.Conn
	pid      int
	done     chan error
	finished chan struct{}
}

func openClient(t *testing.T, pg *pgtest.Cluster) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	c := &client{conn: conn, done: make(chan error, 1), finished: make(chan struct{})}
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&c.pid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-c.finished:
		default:
			if c.started() {
				pg.Stop(t, "immediate")
				<-c.finished
			}
		}
		conn.Close(context.Background())
	})
	return c
}

func (c *client) started() bool { return c.done == nil }

// start runs sql in the background; its result arrives on the returned
// channel.
func (c *client) start(sql string) chan error {
	out := c.done
	c.done = nil
	go func() {
		defer close(c.finished)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := c.conn.Exec(ctx, sql)
		out <- err
	}()
	return out
}

// pendingCommit runs sql on a client of its own in the background; its
// backend pid and a channel with the result.
func pendingCommit(t *testing.T, pg *pgtest.Cluster, sql string) (int, chan error) {
	t.Helper()
	c := openClient(t, pg)
	return c.pid, c.start(sql)
}

// waitSyncRep waits until backend pid waits for synchronous replication.
func waitSyncRep(t *testing.T, pg *pgtest.Cluster, pid int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("backend %d to wait in SyncRep", pid), func() (bool, error) {
		return pg.QueryString(t, "SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1", pid) == "SyncRep", nil
	})
}

// commitOK runs sql and fails unless it returns within limit.
func commitOK(t *testing.T, pg *pgtest.Cluster, conn *pgx.Conn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s through the gate: %v\n%s", sql, err, pg.Log())
	}
}

func gateConnected(t *testing.T, pg *pgtest.Cluster) bool {
	return pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", commitgate.DefaultAppName) == "1"
}

// TestCommitsStopAtLeaseDeadline: with a valid lease commits go through
// the gate; once the lease's deadline passed a commit waits (and the gate
// sent no acknowledgement after the deadline); a renewal lets it through.
func TestCommitsStopAtLeaseDeadline(t *testing.T) {
	pg := gatedServer(t, commitgate.DefaultAppName)
	held, deadline, g := runGate(t, pg, 2500*time.Millisecond, 500*time.Millisecond)
	conn := pg.Conn(t)
	commitOK(t, pg, conn, "CREATE TABLE t (v int)")
	commitOK(t, pg, conn, "INSERT INTO t VALUES (1)")
	testutil.WaitFor(t, 30*time.Second, "the lease deadline", func() (bool, error) { ok, _ := held.Serving(time.Now()); return !ok, nil })
	pid, done := pendingCommit(t, pg, "INSERT INTO t VALUES (2)")
	waitSyncRep(t, pg, pid)
	testutil.WaitFor(t, 30*time.Second, "the gate to withhold an acknowledgement", func() (bool, error) { return g.Stats().Withheld > 0, nil })
	select {
	case err := <-done:
		t.Fatalf("a commit returned after the lease deadline (err %v)", err)
	default:
	}
	if st := g.Stats(); !st.LastAdvance.Before(deadline) {
		t.Fatalf("the gate advanced its acknowledgement at %v, after the deadline %v", st.LastAdvance, deadline)
	}
	// A renewal: the same commit goes through, still gated.
	held.Update(func(l *lease.Lease) {
		l.Answer("n1", 1, time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Epoch: 1})
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the commit after the renewal: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the commit did not return after the lease was renewed")
	}
}

// startChild runs a gate in a process of its own, valid for valid.
func startChild(t *testing.T, pg *pgtest.Cluster, valid time.Duration) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+pg.DSN(), childValidEnv+"="+strconv.FormatInt(valid.Milliseconds(), 10))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	testutil.WaitFor(t, 30*time.Second, "the gate to connect", func() (bool, error) { return gateConnected(t, pg), nil })
	return cmd
}

// TestGateKilled: kill -9 of the gate's process: commits stop, none is
// acknowledged ungated.
func TestGateKilled(t *testing.T) {
	pg := gatedServer(t, commitgate.DefaultAppName)
	child := startChild(t, pg, time.Hour)
	conn := pg.Conn(t)
	commitOK(t, pg, conn, "CREATE TABLE t (v int)")
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	testutil.WaitFor(t, 30*time.Second, "the gate's walsender to go", func() (bool, error) {
		return pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication") == "0", nil
	})
	pid, done := pendingCommit(t, pg, "INSERT INTO t VALUES (1)")
	waitSyncRep(t, pg, pid)
	select {
	case err := <-done:
		t.Fatalf("a commit returned with the gate killed (err %v)", err)
	case <-time.After(time.Second): // still waiting after a second more
	}
}

// TestGateTerminated: the gate's walsender terminated while the lease is
// expired: the gate reconnects and still acknowledges nothing.
func TestGateTerminated(t *testing.T) {
	pg := gatedServer(t, commitgate.DefaultAppName)
	held, _, _ := runGate(t, pg, 2500*time.Millisecond, 500*time.Millisecond)
	conn := pg.Conn(t)
	commitOK(t, pg, conn, "CREATE TABLE t (v int)")
	testutil.WaitFor(t, 30*time.Second, "the lease deadline", func() (bool, error) { ok, _ := held.Serving(time.Now()); return !ok, nil })
	pid, done := pendingCommit(t, pg, "INSERT INTO t VALUES (1)")
	waitSyncRep(t, pg, pid)
	old := pg.QueryString(t, "SELECT pid::text FROM pg_stat_replication WHERE application_name = $1", commitgate.DefaultAppName)
	pg.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = $1", commitgate.DefaultAppName)
	testutil.WaitFor(t, 30*time.Second, "the gate to reconnect", func() (bool, error) {
		return gateConnected(t, pg) && pg.QueryString(t, "SELECT pid::text FROM pg_stat_replication WHERE application_name = $1", commitgate.DefaultAppName) != old, nil
	})
	select {
	case err := <-done:
		t.Fatalf("a commit returned after the gate's walsender was terminated (err %v)", err)
	case <-time.After(time.Second):
	}
}

// TestComposition: the coordinator's setting names a real standby; a
// commit returns only when the lease is valid and the standby flushed it.
func TestComposition(t *testing.T) {
	pg := gatedServer(t, "")
	sb := pgtest.Empty(t, pgtest.Options{})
	pg.Run(t, "pg_basebackup", "-D", sb.PGData, "-R", "-X", "stream", "-d", pg.DSN()+" application_name=sb1")
	sb.AppendConf(t, sb.LocalConf())
	sb.AppendConf(t, map[string]string{"primary_conninfo": "'" + pg.DSN() + " application_name=sb1'", "hot_standby": "on"})
	sb.Start(t)
	conn := pg.Conn(t)
	ctx := context.Background()
	// A standby about to be promoted takes the gated setting too (the
	// coordinator sets it before the promotion): inert until then.
	sbConn := sb.Conn(t)
	if err := commitgate.Apply(ctx, sbConn, `FIRST 1 ("pg-x")`, commitgate.DefaultAppName, true); err != nil {
		t.Fatalf("the gated setting on a standby: %v", err)
	}
	testutil.WaitFor(t, 30*time.Second, "the gated setting on the standby", func() (bool, error) {
		v, gated, err := commitgate.Requested(ctx, sbConn, commitgate.DefaultAppName)
		return err == nil && gated && v == `FIRST 1 ("pg-x")`, nil
	})
	if err := commitgate.Apply(ctx, conn, `FIRST 1 ("sb1")`, commitgate.DefaultAppName, true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the gated setting", func() (bool, error) {
		v, gated, err := commitgate.Requested(ctx, conn, commitgate.DefaultAppName)
		return err == nil && gated && v == `FIRST 1 ("sb1")`, nil
	})
	_, _, g := runGate(t, pg, time.Hour, time.Second)
	testutil.WaitFor(t, 30*time.Second, "the standby to stream", func() (bool, error) {
		return pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = 'sb1' AND state = 'streaming'") == "1", nil
	})
	commitOK(t, pg, conn, "CREATE TABLE t (v int)")
	// The standby's walreceiver frozen: it flushes and acknowledges
	// nothing more, and the valid lease alone lets nothing through.
	wr, err := strconv.Atoi(sb.QueryString(t, "SELECT pid::text FROM pg_stat_wal_receiver"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(wr, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(wr, syscall.SIGCONT)
	pid, done := pendingCommit(t, pg, "INSERT INTO t VALUES (1)")
	waitSyncRep(t, pg, pid)
	testutil.WaitFor(t, 30*time.Second, "the gate to receive the commit's WAL", func() (bool, error) {
		st := g.Stats()
		return st.Received > st.Acked, nil
	})
	select {
	case err := <-done:
		t.Fatalf("a commit returned while the synchronous standby flushed nothing (err %v)", err)
	case <-time.After(time.Second):
	}
	if err := syscall.Kill(wr, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the commit did not return once the standby flushed it")
	}
	if got := sb.QueryString(t, "SELECT count(*)::text FROM t"); got != "1" {
		t.Fatalf("the standby has %s rows, want 1", got)
	}
}

// postgresPIDs is the postmaster of pgdata and all its children.
func postgresPIDs(t *testing.T, pgdata string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	return testutil.ProcessTree(pm)
}

// TestFreeze: PostgreSQL (postmaster and every child) and the gate's
// process are stopped together while a client holds an open connection;
// the client's write is sent during the freeze; the lease expires; all
// are resumed: the write is not acknowledged. With the gate off the same
// sequence acknowledges the write after the lease expired: the window
// the gate closes, reported (not asserted).
func TestFreeze(t *testing.T) {
	for _, gated := range []bool{true, false} {
		t.Run(fmt.Sprintf("gated=%v", gated), func(t *testing.T) {
			ssn := ""
			if gated {
				ssn = commitgate.DefaultAppName
			}
			pg := gatedServer(t, ssn)
			const valid = 4 * time.Second
			start := time.Now()
			child := startChild(t, pg, valid)
			deadline := start.Add(valid) // the child's is no later: it started after start
			cl := openClient(t, pg)
			commitOK(t, pg, cl.conn, "CREATE TABLE t (v int)")
			if time.Now().After(deadline.Add(-time.Second)) {
				t.Skip("the machine is too slow to freeze before the lease deadline")
			}
			pids := append(postgresPIDs(t, pg.PGData), child.Process.Pid)
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGSTOP)
			}
			resumed := false
			resume := func() {
				if !resumed {
					for _, p := range pids {
						syscall.Kill(p, syscall.SIGCONT)
					}
					resumed = true
				}
			}
			defer resume()
			// The client writes during the freeze, on its open connection.
			done := cl.start("INSERT INTO t VALUES (1)")
			testutil.WaitFor(t, 30*time.Second, "the lease to expire", func() (bool, error) { return time.Now().After(deadline.Add(200 * time.Millisecond)), nil })
			resumedAt := time.Now()
			resume()
			if !gated {
				select {
				case err := <-done:
					t.Logf("WINDOW (gate off): the write sent during the freeze was acknowledged %s after the lease deadline (err %v)", time.Since(deadline).Round(time.Millisecond), err)
				case <-time.After(30 * time.Second):
					t.Logf("gate off: the write was not acknowledged within 30s of the resume")
				}
				return
			}
			// The gate replied after the resume (it is alive) and its flush
			// position is still short of the server's WAL.
			testutil.WaitFor(t, 30*time.Second, "a reply from the resumed gate", func() (bool, error) {
				return pg.QueryString(t, "SELECT coalesce(reply_time > $1, false)::text FROM pg_stat_replication WHERE application_name = $2", resumedAt, commitgate.DefaultAppName) == "true", nil
			})
			if got := pg.QueryString(t, "SELECT (flush_lsn < pg_current_wal_lsn())::text FROM pg_stat_replication WHERE application_name = $1", commitgate.DefaultAppName); got != "true" {
				t.Fatalf("the resumed gate acknowledged the server's whole WAL (flush_lsn < current: %s)", got)
			}
			select {
			case err := <-done:
				t.Fatalf("the write sent during the freeze was acknowledged after the lease expired (err %v)", err)
			case <-time.After(time.Second):
			}
		})
	}
}

// TestRefresh: the gate reads the requested setting again at most every
// second by itself; a set_synchronous order calls Refresh after its
// reload, and from its return on the gate enforces the new value: a
// commit right after a standby is required waits for it.
func TestRefresh(t *testing.T) {
	pg := gatedServer(t, commitgate.DefaultAppName)
	_, _, g := runGate(t, pg, time.Hour, time.Second)
	conn := pg.Conn(t)
	ctx := context.Background()
	commitOK(t, pg, conn, "CREATE TABLE t (v int)")
	for i := range 3 { // commits keep the gate's cached value fresh
		commitOK(t, pg, conn, fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	if err := commitgate.Apply(ctx, conn, `FIRST 1 ("absent")`, commitgate.DefaultAppName, true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the new setting", func() (bool, error) {
		v, _, err := commitgate.Requested(ctx, conn, commitgate.DefaultAppName)
		return err == nil && v == `FIRST 1 ("absent")`, nil
	})
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.Refresh(rctx); err != nil {
		t.Fatal(err)
	}
	pid, done := pendingCommit(t, pg, "INSERT INTO t VALUES (10)")
	waitSyncRep(t, pg, pid)
	select {
	case err := <-done:
		t.Fatalf("a commit went through after Refresh although the required standby is absent (err %v)", err)
	case <-time.After(time.Second):
	}
}
