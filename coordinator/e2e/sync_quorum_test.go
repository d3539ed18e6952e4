package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// quorumSetting is the synchronous_standby_names the leader gives a primary
// for "quorum n" with the standbys names: ANY n ("a", "b").
func quorumSetting(n int, names []string) string {
	q := make([]string, len(names))
	for i, name := range names {
		q[i] = fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("ANY %d (%s)", n, strings.Join(q, ", "))
}

// waitQuorumConverged waits until every member is healthy, the recorded
// synchronous standbys are exactly the two replicas, the primary's
// synchronous_standby_names is ANY n naming both, pg_stat_replication shows
// both with sync_state quorum, and (when w is given) the writer's commits
// go through. It returns the primary and the two replicas (sorted).
func waitQuorumConverged(t *testing.T, l *lab, w *syncAckWriter, n int, timeout time.Duration) (primary string, replicas []string) {
	t.Helper()
	start := 0
	if w != nil {
		start = w.count()
	}
	began := time.Now()
	testutil.WaitFor(t, timeout, fmt.Sprintf("quorum %d converged (both replicas recorded, named ANY %d and quorum in pg_stat_replication)", n, n), func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		var others []string
		for _, m := range c.Members {
			if !m.Healthy {
				return false, fmt.Errorf("%s: role %s, problems %v", m.Name, m.Role, m.Problems)
			}
			if m.Name != c.Primary {
				others = append(others, m.Name)
			}
		}
		slices.Sort(others)
		if len(others) != 2 {
			return false, fmt.Errorf("primary %q, other members %v", c.Primary, others)
		}
		rec, err := recordedSync(l)
		if err != nil {
			return false, err
		}
		if !slices.Equal(slices.Sorted(slices.Values(rec)), others) {
			return false, fmt.Errorf("recorded synchronous standbys %v, want %v (primary %s)", rec, others, c.Primary)
		}
		ssn, err := l.psql(c.Primary, "SHOW synchronous_standby_names")
		if err != nil {
			return false, err
		}
		if want := quorumSetting(n, others); ssn != want {
			return false, fmt.Errorf("primary %s: synchronous_standby_names %q, want %q", c.Primary, ssn, want)
		}
		states, err := l.psql(c.Primary, "SELECT application_name || '=' || sync_state FROM pg_stat_replication ORDER BY application_name")
		if err != nil {
			return false, err
		}
		want := fmt.Sprintf("%s=quorum %s=quorum", others[0], others[1])
		if got := strings.Join(strings.Fields(states), " "); got != want {
			return false, fmt.Errorf("primary %s: pg_stat_replication %q, want %q", c.Primary, got, want)
		}
		if w != nil && w.count() < start+20 {
			return false, fmt.Errorf("the writer acknowledged %d commits since the wait began", w.count()-start)
		}
		primary, replicas = c.Primary, others
		return true, nil
	})
	t.Logf("quorum %d converged in %s: primary %s, ANY %d %v, both sync_state=quorum", n, time.Since(began).Round(10*time.Millisecond), primary, n, replicas)
	return primary, replicas
}

// quorumWaitSyncOff waits until the recorded synchronous standbys are empty, the
// primary's synchronous_standby_names is empty, its pg_stat_replication
// shows every replica async, and (when w is given) the writer's commits go
// through.
func quorumWaitSyncOff(t *testing.T, l *lab, w *syncAckWriter, timeout time.Duration) string {
	t.Helper()
	start := 0
	if w != nil {
		start = w.count()
	}
	began := time.Now()
	var primary string
	testutil.WaitFor(t, timeout, "synchronous mode off (nothing recorded, synchronous_standby_names empty, replicas async)", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		rec, err := recordedSync(l)
		if err != nil {
			return false, err
		}
		if len(rec) != 0 {
			return false, fmt.Errorf("recorded synchronous standbys %v", rec)
		}
		ssn, err := l.psql(c.Primary, "SHOW synchronous_standby_names")
		if err != nil {
			return false, err
		}
		if ssn != "" {
			return false, fmt.Errorf("primary %s: synchronous_standby_names %q, want empty", c.Primary, ssn)
		}
		states, err := l.psql(c.Primary, "SELECT application_name || '=' || sync_state FROM pg_stat_replication WHERE sync_state <> 'async'")
		if err != nil || strings.TrimSpace(states) != "" {
			return false, fmt.Errorf("primary %s: non-async replicas %q (%v)", c.Primary, states, err)
		}
		if w != nil && w.count() < start+20 {
			return false, fmt.Errorf("the writer acknowledged %d commits since the wait began", w.count()-start)
		}
		primary = c.Primary
		return true, nil
	})
	t.Logf("synchronous mode off in %s: primary %s, synchronous_standby_names empty, nothing recorded", time.Since(began).Round(10*time.Millisecond), primary)
	return primary
}

// checkAcked fails the test unless every id the writer acknowledged is in
// node's acked table; it returns how many there were.
func checkAcked(t *testing.T, l *lab, w *syncAckWriter, node, when string) int {
	t.Helper()
	acked := w.ackedIDs()
	out, err := l.psql(node, "SELECT id FROM acked ORDER BY id")
	if err != nil {
		t.Fatalf("%s: reading acked rows on %s: %v", when, node, err)
	}
	have := map[string]bool{}
	for _, id := range strings.Fields(out) {
		have[id] = true
	}
	var missing []int64
	for _, id := range acked {
		if !have[fmt.Sprint(id)] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s: %d of %d acknowledged commits are missing on %s, e.g. %v",
			when, len(missing), len(acked), node, missing[:min(10, len(missing))])
	}
	return len(acked)
}

// TestSynchronousQuorum: with policy synchronous "quorum 1" the primary
// waits for ANY 1 of both replicas; through 3 cycles of kill -9 of the
// primary's postmaster and agent, a replica is promoted that has every
// acknowledged commit, and the killed node rejoins. Switching the policy to
// "on" narrows the setting to FIRST 1 of one recorded standby, and "off"
// clears it: writes then succeed with both replicas stopped.
func TestSynchronousQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	const cycles = 3
	began := time.Now()
	l := startLab(t, "PGDR_LAB_MIN_INTERVAL=1s")
	nodes := []string{"pg-a1", "pg-a2", "pg-b1"}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if _, raw, err := l.status(); err == nil {
			t.Logf("pgdrctl status --json at failure:\n%s", raw)
		}
		if out, err := l.ctl("history", "--cluster", "main"); err == nil {
			t.Logf("pgdrctl history at failure:\n%s", testutil.Trim(out))
		}
	})

	// --- (1) quorum 1: ANY 1 of both replicas -------------------------------
	phase := time.Now()
	syncPolicy(t, l, "quorum 1")
	primary, replicas := waitQuorumConverged(t, l, nil, 1, 60*time.Second)
	t.Logf("phase 1 (quorum 1 on the initial primary %s) in %s", primary, time.Since(phase).Round(10*time.Millisecond))

	// --- (2) acknowledged-commit writer, kill-and-failover cycles -----------
	w := startSyncAckWriter(t, l, primary, nodes)
	defer w.finish(t)
	for cycle := 1; cycle <= cycles; cycle++ {
		primary, replicas = waitQuorumConverged(t, l, w, 1, 90*time.Second)
		c, err := l.clusterNow()
		if err != nil {
			t.Fatal(err)
		}
		epoch := c.Epoch

		killed := l.killNode(t, primary)
		newPrimary, newEpoch := l.waitNewPrimary(t, primary, epoch, 60*time.Second)
		took := time.Since(killed)
		if !slices.Contains(replicas, newPrimary) {
			t.Fatalf("cycle %d: %s was promoted, not one of the recorded synchronous standbys %v", cycle, newPrimary, replicas)
		}
		n := checkAcked(t, l, w, newPrimary, fmt.Sprintf("cycle %d", cycle))
		t.Logf("cycle %d: killed %s (epoch %d); %s promoted (epoch %d) in %.1fs; all %d acknowledged commits present",
			cycle, primary, epoch, newPrimary, newEpoch, took.Seconds(), n)

		rejoin := time.Now()
		l.startAgent(t, primary)
		l.waitHealthyReplica(t, primary, 90*time.Second)
		t.Logf("cycle %d: %s rejoined as a healthy replica %s after its agent was started", cycle, primary, time.Since(rejoin).Round(10*time.Millisecond))
	}
	primary, _ = waitQuorumConverged(t, l, w, 1, 90*time.Second)
	n := checkAcked(t, l, w, primary, "after the cycles")
	t.Logf("phase 2: %d cycles done, %d acknowledged commits on %s (%s since the lab was up)", cycles, n, primary, time.Since(began).Round(time.Second))

	// --- (3a) quorum 1 → on: FIRST 1 of one recorded standby ---------------
	phase = time.Now()
	syncPolicy(t, l, "on")
	primary, standby := waitSyncConverged(t, l, w, 60*time.Second)
	t.Logf("phase 3a: policy on converged in %s: primary %s, FIRST 1 (%q), recorded [%s]", time.Since(phase).Round(10*time.Millisecond), primary, standby, standby)

	// --- (3b) on → off: setting cleared, writes without any replica --------
	phase = time.Now()
	syncPolicy(t, l, "off")
	primary = quorumWaitSyncOff(t, l, w, 60*time.Second)
	t.Logf("phase 3b: policy off converged in %s", time.Since(phase).Round(10*time.Millisecond))

	if _, err := l.psql(primary, "CREATE TABLE offwrites (node text, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	var stopped []string
	for _, node := range nodes {
		if node != primary {
			l.pgCtl(t, node, "stop", "-m", "fast", "-w")
			stopped = append(stopped, node)
		}
	}
	stoppedAt := time.Now()
	t.Logf("stopped the replicas %v (pg_ctl stop -m fast)", stopped)
	// Write once the coordinators see both replicas down, so that nothing
	// they do about it can make the primary wait.
	testutil.WaitFor(t, 20*time.Second, "both stopped replicas reported unhealthy", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		for _, node := range stopped {
			if m, _ := labMember(c, node); m.Healthy {
				return false, fmt.Errorf("%s: role %s healthy", node, m.Role)
			}
		}
		return true, nil
	})
	t.Logf("both replicas reported unhealthy %s after the stop", time.Since(stoppedAt).Round(10*time.Millisecond))
	before := w.count()
	var wrote time.Time
	testutil.WaitFor(t, 15*time.Second, "a write on "+primary+" with both replicas stopped", func() (bool, error) {
		if !l.tryWrite(primary, "offwrites") {
			return false, fmt.Errorf("INSERT on %s did not commit within 1s", primary)
		}
		wrote = time.Now()
		return true, nil
	})
	testutil.WaitFor(t, 15*time.Second, "the writer's commits go through with both replicas stopped", func() (bool, error) {
		return w.count() >= before+20, fmt.Errorf("%d commits acknowledged since the replicas stopped", w.count()-before)
	})
	if ssn, err := l.psql(primary, "SHOW synchronous_standby_names"); err != nil || ssn != "" {
		t.Errorf("primary %s with the replicas stopped: synchronous_standby_names %q (%v), want empty", primary, ssn, err)
	}
	if c, err := l.clusterNow(); err != nil || c.Primary != primary {
		t.Errorf("with the replicas stopped: primary %q (%v), want %s", c.Primary, err, primary)
	}
	t.Logf("off mode: a write committed on %s with both replicas stopped (%s after the stop); the writer acknowledged %d more",
		primary, wrote.Sub(stoppedAt).Round(10*time.Millisecond), w.count()-before)

	for _, node := range stopped {
		l.pgCtl(t, node, "start", "-w", "-t", "60", "-l", filepath.Join(l.dir, node, "postgres.log"))
	}
	restart := time.Now()
	for _, node := range stopped {
		l.waitHealthyReplica(t, node, 60*time.Second)
	}
	t.Logf("replicas %v healthy again %s after pg_ctl start", stopped, time.Since(restart).Round(10*time.Millisecond))
	quorumWaitSyncOff(t, l, w, 30*time.Second)
	n = checkAcked(t, l, w, primary, "at the end")
	t.Logf("all %d acknowledged commits present on %s at the end", n, primary)

	w.mu.Lock()
	t.Logf("writer: %d acknowledged commits, %d failed (not acknowledged), %d with a synchronous replication warning; total %s",
		len(w.acked), w.failures, w.warned, time.Since(began).Round(time.Second))
	w.mu.Unlock()
}
