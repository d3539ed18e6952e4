package e2e

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// syncAckWriter inserts rows with increasing ids into the current primary, one
// commit at a time, and records an id only once its COMMIT returned without
// error or warning: the acknowledged commits that synchronous mode must
// never lose.
type syncAckWriter struct {
	l     *lab
	nodes []string
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	acked    []int64
	failures int
	warned   int
}

func startSyncAckWriter(t *testing.T, l *lab, primary string, nodes []string) *syncAckWriter {
	t.Helper()
	if _, err := l.psql(primary, "CREATE TABLE acked (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	w := &syncAckWriter{l: l, nodes: nodes, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *syncAckWriter) ackedIDs() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

func (w *syncAckWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// connectPrimary finds a node that is not in recovery and connects to it.
func (w *syncAckWriter) connectPrimary(warned *atomic.Bool) *pgx.Conn {
	for _, n := range w.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=1 application_name=ackwriter", w.l.pgPort(n)))
		if err != nil {
			cancel()
			continue
		}
		// PostgreSQL reports a commit whose wait for synchronous
		// replication was cancelled as a WARNING, not an error: such a
		// commit is not acknowledged.
		cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			if strings.Contains(n.Message, "synchronous replication") || strings.Contains(n.Detail, "replicated") {
				warned.Store(true)
			}
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			cancel()
			continue
		}
		var inRecovery bool
		err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		cancel()
		if err == nil && !inRecovery {
			return conn
		}
		conn.Close(context.Background())
	}
	return nil
}

func (w *syncAckWriter) run() {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-w.stop; cancel() }()
	var conn *pgx.Conn
	var warned atomic.Bool
	next := int64(1)
	for {
		select {
		case <-w.stop:
			if conn != nil {
				conn.Close(context.Background())
			}
			return
		default:
		}
		if conn == nil {
			if conn = w.connectPrimary(&warned); conn == nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		id := next
		next++
		warned.Store(false)
		// No client timeout: cancelling a commit that waits for its
		// synchronous standby would turn it into a warning.
		_, err := conn.Exec(ctx, "INSERT INTO acked (id) VALUES ($1)", id)
		select {
		case <-w.stop:
			continue // results after stop are not counted
		default:
		}
		w.mu.Lock()
		switch {
		case err != nil:
			w.failures++
		case warned.Load():
			w.warned++
		default:
			w.acked = append(w.acked, id)
		}
		w.mu.Unlock()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		time.Sleep(3 * time.Millisecond)
	}
}

// finish stops the writer (again: a no-op).
func (w *syncAckWriter) finish(t *testing.T) {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Log("ack writer: still blocked in a commit 10s after stop; left to end with the lab")
	}
}

// syncPolicy sets policy.synchronous through pgdrctl (AdminService.SetPolicy).
// If the coordinators do not implement SetPolicy yet, it proposes the
// SET_POLICY command on the leader directly (CoordinatorService.Apply, with
// a coordinator's certificate), keeping the rest of the policy.
func syncPolicy(t *testing.T, l *lab, value string) {
	t.Helper()
	out, err := l.ctl("policy", "set", "--cluster", "main", "--synchronous", value)
	if err == nil {
		t.Logf("pgdrctl policy set --synchronous %s: %s", value, strings.TrimSpace(string(out)))
		return
	}
	t.Logf("pgdrctl policy set: %v; proposing SET_POLICY directly", err)
	cfg, err := tlsutil.ClientConfig(tlsutil.Files{
		CA: filepath.Join(l.dir, "tls", "ca.crt"), Cert: filepath.Join(l.dir, "tls", "c1.crt"), Key: filepath.Join(l.dir, "tls", "c1.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var last error
	testutil.WaitFor(t, 30*time.Second, "SET_POLICY applied on the leader", func() (bool, error) {
		for i := 1; i <= 3; i++ {
			if err := applySyncPolicyDirect(l.addr(i), cfg, value); err != nil {
				last = err
				continue
			}
			return true, nil
		}
		return false, last
	})
}

func applySyncPolicyDirect(addr string, cfg *tls.Config, value string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg.Clone())))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := pgdrv1.NewAdminServiceClient(conn).Status(ctx, &pgdrv1.StatusRequest{Cluster: "main"})
	if err != nil {
		return err
	}
	if len(st.Clusters) != 1 {
		return fmt.Errorf("status: %d clusters", len(st.Clusters))
	}
	p := &pgdrv1.Policy{}
	if st.Clusters[0].Policy != nil {
		p = proto.Clone(st.Clusters[0].Policy).(*pgdrv1.Policy)
	}
	p.Synchronous = value
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_SET_POLICY, &pgdrv1.SetPolicy{Cluster: "main", Policy: p}, "coordinator:e2e", time.Now())
	if err != nil {
		return err
	}
	res, err := pgdrv1.NewCoordinatorServiceClient(conn).Apply(ctx, &pgdrv1.ApplyRequest{Command: cmd})
	if err != nil {
		return err
	}
	if !res.Ok {
		return errors.New(res.Error)
	}
	return nil
}

// recordedSync is the cluster's sync_standbys as the history last recorded
// them ("synchronous standbys: [a b]").
func recordedSync(l *lab) ([]string, error) {
	return recordedSyncAt(l, func(ctl.EventJSON) bool { return false })
}

// recordedSyncAtFailover is the cluster's sync_standbys as recorded when
// the failover from epoch began (before its failover-intent).
func recordedSyncAtFailover(l *lab, epoch uint64) ([]string, error) {
	return recordedSyncAt(l, func(ev ctl.EventJSON) bool { return ev.Kind == "failover-intent" && ev.Epoch == epoch })
}

// recordedSyncAt is the sync_standbys recorded before the first event
// stop accepts (the last recorded when none does).
func recordedSyncAt(l *lab, stop func(ctl.EventJSON) bool) ([]string, error) {
	h, err := l.tryHistory()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(h, func(a, b ctl.EventJSON) int { return cmp.Compare(a.Seq, b.Seq) })
	var last *ctl.EventJSON
	for i := range h {
		if stop(h[i]) {
			break
		}
		if h[i].Kind == "sync-standbys-set" {
			last = &h[i]
		}
	}
	if last == nil {
		return nil, nil
	}
	_, list, ok := strings.Cut(last.Message, "[")
	list, _, ok2 := strings.Cut(list, "]")
	if !ok || !ok2 {
		return nil, fmt.Errorf("cannot read %q", last.Message)
	}
	return strings.Fields(list), nil
}

// waitSyncConverged waits until every member is healthy, the recorded
// synchronous standbys are exactly one replica x, the primary's
// synchronous_standby_names names x, pg_stat_replication shows x as sync,
// and (when w is given) the writer's commits go through. It returns the
// primary and x.
func waitSyncConverged(t *testing.T, l *lab, w *syncAckWriter, timeout time.Duration) (primary, standby string) {
	t.Helper()
	start := 0
	if w != nil {
		start = w.count()
	}
	testutil.WaitFor(t, timeout, "synchronous mode converged (one recorded synchronous standby, used by the primary)", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		for _, m := range c.Members {
			if !m.Healthy {
				return false, fmt.Errorf("%s: role %s, problems %v", m.Name, m.Role, m.Problems)
			}
		}
		rec, err := recordedSync(l)
		if err != nil {
			return false, err
		}
		if len(rec) != 1 || rec[0] == c.Primary {
			return false, fmt.Errorf("recorded synchronous standbys %v (primary %s)", rec, c.Primary)
		}
		ssn, err := l.psql(c.Primary, "SHOW synchronous_standby_names")
		if err != nil {
			return false, err
		}
		if want := fmt.Sprintf("FIRST 1 (%q)", rec[0]); ssn != want {
			return false, fmt.Errorf("primary %s: synchronous_standby_names %q, want %q", c.Primary, ssn, want)
		}
		state, err := l.psql(c.Primary, fmt.Sprintf("SELECT sync_state FROM pg_stat_replication WHERE application_name = '%s'", rec[0]))
		if err != nil || state != "sync" {
			return false, fmt.Errorf("primary %s: pg_stat_replication sync_state of %s = %q (%v)", c.Primary, rec[0], state, err)
		}
		if w != nil && w.count() < start+20 {
			return false, fmt.Errorf("the writer acknowledged %d commits since the cycle began", w.count()-start)
		}
		primary, standby = c.Primary, rec[0]
		return true, nil
	})
	return primary, standby
}

// TestSynchronousNoAckedCommitLost: in synchronous mode ("on"), a writer
// records every acknowledged commit; through 10 cycles of kill -9 of the
// primary's postmaster and agent, the recorded synchronous standby is
// promoted and every acknowledged commit is on it; the killed node rejoins
// (pg_rewind) and becomes a candidate again.
func TestSynchronousNoAckedCommitLost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	const cycles = 10
	began := time.Now()
	l := startLab(t, "PGDR_LAB_MIN_INTERVAL=1s")
	nodes := []string{"pg-a1", "pg-a2", "pg-b1"}

	syncPolicy(t, l, "on")
	primary, standby := waitSyncConverged(t, l, nil, 60*time.Second)
	t.Logf("synchronous mode on: primary %s, synchronous standby %s (recorded, named, sync in pg_stat_replication)", primary, standby)

	w := startSyncAckWriter(t, l, primary, nodes)
	defer w.finish(t)
	for cycle := 1; cycle <= cycles; cycle++ {
		primary, standby = waitSyncConverged(t, l, w, 90*time.Second)
		v, _, err := l.status()
		if err != nil {
			t.Fatal(err)
		}
		c, _ := labCluster(v, "main")
		epoch := c.Epoch

		killed := l.killNode(t, primary)
		newPrimary, _ := l.waitNewPrimary(t, primary, epoch, 60*time.Second)
		took := time.Since(killed)
		// The leader may change the synchronous standbys after the check
		// above (a rejoined node becomes one): what matters is the set
		// recorded when it decided.
		rec, err := recordedSyncAtFailover(l, epoch)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(rec, newPrimary) {
			t.Fatalf("cycle %d: %s was promoted, but the recorded synchronous standbys at the failover were %v", cycle, newPrimary, rec)
		}
		if newPrimary != standby {
			t.Logf("cycle %d: %s promoted; %s was the synchronous standby when the cycle began, %v were recorded at the failover", cycle, newPrimary, standby, rec)
		}

		// Every commit acknowledged so far (before the kill and since) is
		// on the new primary.
		n := checkAcked(t, l, w, newPrimary, fmt.Sprintf("cycle %d (new primary)", cycle))
		t.Logf("cycle %d: killed %s; %s promoted in %.1fs; all %d acknowledged commits present",
			cycle, primary, newPrimary, took.Seconds(), n)

		// The killed node comes back: its agent restarts and the
		// coordinators rejoin it with pg_rewind.
		l.startAgent(t, primary)
	}
	primary, _ = waitSyncConverged(t, l, w, 90*time.Second)
	// The last check: the writer stopped, every commit it acknowledged
	// (including those after the last cycle's check) is on the final
	// primary.
	w.finish(t)
	n := checkAcked(t, l, w, primary, "after the last cycle (final primary)")
	if n == 0 {
		t.Fatal("the writer acknowledged no commit")
	}
	w.mu.Lock()
	t.Logf("writer: %d acknowledged commits, all on the final primary %s; %d failed (not acknowledged), %d with a synchronous replication warning; %d cycles in %s",
		len(w.acked), primary, w.failures, w.warned, cycles, time.Since(began).Round(time.Second))
	w.mu.Unlock()
}
