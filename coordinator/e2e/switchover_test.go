package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// switchoverWriter inserts rows with increasing ids through whichever node takes
// writes and records every id whose commit was acknowledged, with the node
// that acknowledged it.
type switchoverWriter struct {
	l     *lab
	nodes []string
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked []int
	by    map[string]int // node → acknowledged rows
	last  map[string]time.Time
	first map[string]time.Time
}

func startSwitchoverWriter(t *testing.T, l *lab, nodes ...string) *switchoverWriter {
	t.Helper()
	if _, err := l.psql(nodes[0], "CREATE TABLE IF NOT EXISTS acked (id int PRIMARY KEY, node text, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	w := &switchoverWriter{l: l, nodes: nodes, stop: make(chan struct{}), done: make(chan struct{}),
		by: map[string]int{}, last: map[string]time.Time{}, first: map[string]time.Time{}}
	go w.run()
	return w
}

func (w *switchoverWriter) count(node string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.by[node]
}

func (w *switchoverWriter) run() {
	defer close(w.done)
	var conn *pgx.Conn
	var node string
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	id := 0
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
		select {
		case <-w.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if conn == nil {
			// Whichever node takes a write is the primary for the writer.
			for _, n := range w.nodes {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=1", w.l.pgPort(n)))
				if err == nil {
					var ro string
					err = c.QueryRow(ctx, "SELECT current_setting('transaction_read_only')").Scan(&ro)
					if err == nil && ro == "off" {
						conn, node = c, n
						cancel()
						break
					}
					c.Close(context.Background())
				}
				cancel()
			}
			if conn == nil {
				continue
			}
		}
		id++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := conn.Exec(ctx, "INSERT INTO acked (id, node) VALUES ($1, $2)", id, node)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue // not acknowledged: it may or may not be there
		}
		now := time.Now()
		w.mu.Lock()
		w.acked = append(w.acked, id)
		w.by[node]++
		if w.first[node].IsZero() {
			w.first[node] = now
		}
		w.last[node] = now
		w.mu.Unlock()
	}
}

func (w *switchoverWriter) finish() []int {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

// TestSwitchover: a planned switchover from pg-a1 to pg-b1 under a steady
// write load loses no acknowledged commit, never lets two nodes take
// writes, re-points pg-a2 and rejoins pg-a1 as a replica; a manual
// failover while the new primary is healthy is then refused.
func TestSwitchover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch0 := l.wantPrimary(t, "pg-a1")
	testutil.WaitFor(t, 60*time.Second, "both replicas healthy and streaming", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		for _, n := range []string{"pg-a2", "pg-b1"} {
			m, _ := labMember(c, n)
			if m.Role != "replica" || !m.Healthy || !m.Streaming {
				return false, fmt.Errorf("%s: role %s healthy %v streaming %v problems %v", n, m.Role, m.Healthy, m.Streaming, m.Problems)
			}
		}
		return true, nil
	})

	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	writer := startSwitchoverWriter(t, l, "pg-a1", "pg-b1", "pg-a2")
	testutil.WaitFor(t, 30*time.Second, "the writer and the checker write on pg-a1", func() (bool, error) {
		return writer.count("pg-a1") >= 20 && checker.count("pg-a1") > 0, nil
	})

	start := time.Now()
	out, err := l.ctl("switchover", "--cluster", "main", "--to", "pg-b1", "--json")
	if err != nil {
		writer.finish()
		checker.finish(t)
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	took := time.Since(start)
	var sw ctl.PrimaryChangeJSON
	if err := json.Unmarshal(out, &sw); err != nil {
		t.Fatalf("switchover --json: %v\n%s", err, out)
	}
	t.Logf("switchover took %s; steps:\n  %s", took.Round(time.Millisecond), strings.Join(sw.Steps, "\n  "))
	if sw.Primary != "pg-b1" || sw.Epoch != epoch0+1 {
		t.Fatalf("switchover answered primary %s epoch %d, want pg-b1 at %d", sw.Primary, sw.Epoch, epoch0+1)
	}
	testutil.WaitFor(t, 30*time.Second, "the writer writes on pg-b1", func() (bool, error) {
		return writer.count("pg-b1") >= 20, nil
	})
	acked := writer.finish()
	writer.mu.Lock()
	gap := writer.first["pg-b1"].Sub(writer.last["pg-a1"])
	byNode := copyCounts(writer.by)
	writer.mu.Unlock()
	t.Logf("writer: %d acknowledged rows %v; write unavailability (last ack on pg-a1 to first on pg-b1) %s", len(acked), byNode, gap.Round(time.Millisecond))
	if byNode["pg-a2"] > 0 {
		t.Errorf("pg-a2 acknowledged writes: %v", byNode)
	}

	// Zero data loss: every acknowledged row is on the new primary.
	got, err := l.psql("pg-b1", "SELECT string_agg(id::text, ',' ORDER BY id) FROM acked")
	if err != nil {
		t.Fatal(err)
	}
	have := map[int]bool{}
	for _, s := range strings.Split(got, ",") {
		if n, err := strconv.Atoi(s); err == nil {
			have[n] = true
		}
	}
	var lost []int
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged rows are not on pg-b1: %v", len(lost), lost)
	}

	// The cluster after the switchover: pg-b1 primary, pg-a2 streams from
	// it, pg-a1 rejoined as a healthy replica.
	testutil.WaitFor(t, 120*time.Second, "pg-b1 primary; pg-a1 and pg-a2 healthy replicas", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		if c.Primary != "pg-b1" || c.Epoch != epoch0+1 {
			return false, fmt.Errorf("primary %s epoch %d", c.Primary, c.Epoch)
		}
		for n, role := range map[string]string{"pg-b1": "primary", "pg-a1": "replica", "pg-a2": "replica"} {
			m, _ := labMember(c, n)
			if m.Role != role || !m.Healthy {
				return false, fmt.Errorf("%s: role %s healthy %v problems %v", n, m.Role, m.Healthy, m.Problems)
			}
		}
		return true, nil
	})
	for _, n := range []string{"pg-a1", "pg-a2"} {
		testutil.WaitFor(t, 60*time.Second, n+" streams from pg-b1", func() (bool, error) {
			out, err := l.psql(n, "SELECT status || ' ' || sender_port FROM pg_stat_wal_receiver")
			return err == nil && out == fmt.Sprintf("streaming %d", l.pgPort("pg-b1")), fmt.Errorf("%q %v", out, err)
		})
	}
	if _, err := l.psql("pg-b1", "CREATE TABLE after_switchover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg-a1", "pg-a2"} {
		l.waitTable(t, n, "after_switchover", 60*time.Second)
	}
	checker.finish(t)

	var h ctl.HistoryJSON
	seen := map[string]int{}
	testutil.WaitFor(t, 10*time.Second, "the switchover result in the history", func() (bool, error) {
		out, err = l.ctl("history", "--cluster", "main", "--json")
		if err != nil {
			return false, err
		}
		h = ctl.HistoryJSON{}
		if err := json.Unmarshal(out, &h); err != nil {
			return false, fmt.Errorf("history --json: %v\n%s", err, out)
		}
		for _, e := range h.Events {
			if e.Kind == "switchover-result" {
				return true, nil
			}
		}
		return false, fmt.Errorf("no switchover-result yet")
	})
	for _, e := range h.Events {
		seen[e.Kind]++
		if e.Kind == "switchover-result" && !strings.HasPrefix(e.Message, "done: pg-b1 is primary") {
			t.Errorf("switchover-result: %s", e.Message)
		}
		if strings.HasPrefix(e.Kind, "failover-") {
			t.Errorf("an automatic failover event during the switchover: %s %s", e.Kind, e.Message)
		}
	}
	for _, k := range []string{"switchover-intent", "switchover-step", "switchover-result", "primary-set"} {
		if seen[k] == 0 {
			t.Errorf("history has no %s event:\n%s", k, out)
		}
	}

	// A manual failover while the primary is healthy is refused, and
	// changes nothing.
	out, err = l.ctl("failover", "--cluster", "main", "--to", "pg-a2")
	if err == nil {
		t.Fatalf("failover while pg-b1 is healthy succeeded:\n%s", out)
	}
	if msg := err.Error(); !strings.Contains(msg, "refused") || !strings.Contains(msg, "pg-b1 is healthy") || !strings.Contains(msg, "switchover") {
		t.Errorf("the refusal does not explain itself: %v", err)
	}
	t.Logf("manual failover refused: %v", err)
	v, _, err := l.status()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := labCluster(v, "main")
	if c.Primary != "pg-b1" || c.Epoch != epoch0+1 {
		t.Errorf("after the refused failover: primary %s epoch %d, want pg-b1 at %d", c.Primary, c.Epoch, epoch0+1)
	}
	if m, _ := labMember(c, "pg-a2"); m.Role != "replica" {
		t.Errorf("pg-a2 has role %s after the refused failover", m.Role)
	}

	// The primary gone while the cluster is paused (no automatic failover):
	// once its lease has expired, a manual failover to pg-a2 goes through,
	// and pg-a1 follows pg-a2.
	// pg-a2 must hold WAL of pg-b1's timeline before pg-b1 goes, or the
	// failover below would rightly be refused (promoting it would drop
	// pg-b1's commits).
	testutil.WaitFor(t, 60*time.Second, "pg-a2 on pg-b1's timeline", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		b, _ := labMember(c, "pg-b1")
		a, _ := labMember(c, "pg-a2")
		return b.Timeline > 1 && a.Timeline == b.Timeline, fmt.Errorf("pg-a2 timeline %d, pg-b1 %d", a.Timeline, b.Timeline)
	})
	if _, err := l.ctl("pause", "--cluster", "main", "--reason", "manual failover test"); err != nil {
		t.Fatal(err)
	}
	l.killNode(t, "pg-b1")
	var mf ctl.PrimaryChangeJSON
	testutil.WaitFor(t, 60*time.Second, "a manual failover to pg-a2 accepted", func() (bool, error) {
		out, err := l.ctl("failover", "--cluster", "main", "--to", "pg-a2", "--json")
		if err != nil {
			return false, err
		}
		return true, json.Unmarshal(out, &mf)
	})
	t.Logf("manual failover steps:\n  %s", strings.Join(mf.Steps, "\n  "))
	if mf.Primary != "pg-a2" || mf.Epoch != epoch0+2 {
		t.Fatalf("manual failover answered primary %s epoch %d, want pg-a2 at %d", mf.Primary, mf.Epoch, epoch0+2)
	}
	if _, err := l.psql("pg-a2", "CREATE TABLE after_manual_failover AS SELECT 1 AS x"); err != nil {
		t.Fatalf("pg-a2 does not take writes: %v", err)
	}
	l.waitTable(t, "pg-a1", "after_manual_failover", 60*time.Second)
	// history is answered by any coordinator: a follower may apply the
	// last events a moment later.
	testutil.WaitFor(t, 10*time.Second, "the manual failover in the history", func() (bool, error) {
		out, err = l.ctl("history", "--cluster", "main", "--json")
		if err != nil {
			return false, err
		}
		h = ctl.HistoryJSON{}
		if err := json.Unmarshal(out, &h); err != nil {
			return false, err
		}
		seen = map[string]int{}
		for _, e := range h.Events {
			seen[e.Kind]++
		}
		for _, k := range []string{"manual-failover-intent", "manual-failover-step", "manual-failover-result"} {
			if seen[k] == 0 {
				return false, fmt.Errorf("history has no %s event", k)
			}
		}
		return true, nil
	})
	if seen["failover-intent"] > 0 {
		t.Errorf("an automatic failover happened while paused:\n%s", out)
	}
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
