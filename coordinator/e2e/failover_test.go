package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// psql runs SQL on a lab node as the postgres user and returns its output.
func (l *lab) psql(node, sql string) (string, error) {
	cmd := exec.Command(filepath.Join(pgtest.DefaultBinDir, "psql"), "-X", "-At", "-h", "127.0.0.1",
		"-p", strconv.Itoa(l.pgPort(node)), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql on %s: %v: %s", node, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// writeChecker tries a write on every node every 50 ms until stopped and
// records every round in which more than one node accepted one: the "never
// two primaries" invariant, observed from clients.
type writeChecker struct {
	l      *lab
	nodes  []string
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	rounds int
	double []string
	writes map[string]int
	// expired: the checker stopped by itself at its bound, so part of the
	// test ran unchecked.
	expired bool
}

// checkerBound bounds a write checker that is never stopped (a test that
// dies before finish); no lab test runs this long.
const checkerBound = 30 * time.Minute

func (w *writeChecker) count(node string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes[node]
}

func startWriteChecker(t *testing.T, l *lab, nodes ...string) *writeChecker {
	w := &writeChecker{l: l, nodes: nodes, stop: make(chan struct{}), done: make(chan struct{}), writes: map[string]int{}}
	if _, err := l.psql("pg-a1", "CREATE TABLE IF NOT EXISTS two_primaries (node text, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	go w.run()
	return w
}

func (w *writeChecker) run() {
	defer close(w.done)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for deadline := time.Now().Add(checkerBound); ; {
		if time.Now().After(deadline) {
			w.mu.Lock()
			w.expired = true
			w.mu.Unlock()
			return
		}
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		ok := make([]bool, len(w.nodes))
		done := make(chan struct{}, len(w.nodes))
		for i, n := range w.nodes {
			go func() { ok[i] = w.l.tryWrite(n, "two_primaries"); done <- struct{}{} }()
		}
		for range w.nodes {
			<-done
		}
		var accepted []string
		w.mu.Lock()
		for i, n := range w.nodes {
			if ok[i] {
				accepted = append(accepted, n)
				w.writes[n]++
			}
		}
		w.rounds++
		if len(accepted) > 1 {
			w.double = append(w.double, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), accepted))
		}
		w.mu.Unlock()
	}
}

// finish stops the checker and fails the test if two nodes ever took writes.
func (w *writeChecker) finish(t *testing.T) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("write checker: %d rounds, accepted writes per node %v", w.rounds, w.writes)
	if len(w.double) > 0 {
		t.Fatalf("two nodes accepted writes in the same round: %v", w.double)
	}
	if w.expired {
		t.Fatalf("the write checker stopped by itself after %s: the end of the test ran unchecked", checkerBound)
	}
	if w.rounds < 10 {
		t.Fatalf("the write checker ran only %d rounds", w.rounds)
	}
}

// TestFailoverKillPrimaryRegion: the loss of the primary's whole region
// at once. The lab places its coordinators one per region (c1 in
// us-east-1, with pg-a1 and pg-a2; c2 and c3 elsewhere), so `status` warns
// about nothing. kill -9 of everything in us-east-1 — both PostgreSQL
// servers, their agents and coordinator c1 — leaves c2 and c3 a quorum,
// which promotes pg-b1 (eu-west-1), the only member left; it takes
// writes. The region comes back (c1, then the agents of pg-a1 and pg-a2):
// both old nodes rejoin as replicas of pg-b1 (pg-a1 through pg_rewind),
// and `pgdrctl history` shows each step; `pgdrctl report` lists the
// failover with its measured duration. A write checker tries every node
// throughout: never two writable at once.
func TestFailoverKillPrimaryRegion(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch0 := l.wantPrimary(t, "pg-a1")
	v, raw, err := l.status()
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Warnings) != 0 {
		t.Fatalf("the lab's layout (one coordinator per region) has warnings:\n%s", raw)
	}
	if _, err := l.psql("pg-a1", "CREATE TABLE before_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	// The replicas have it before the primary dies (asynchronous mode: a
	// commit not yet received may be lost, so wait).
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitTable(t, n, "before_failover", 30*time.Second)
	}

	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	testutil.WaitFor(t, 30*time.Second, "the checker writes on pg-a1", func() (bool, error) {
		return checker.count("pg-a1") > 0, nil
	})
	// us-east-1 goes: c1, pg-a1 and pg-a2 (postmasters and agents).
	c1 := readPid(t, filepath.Join(l.dir, "c1", "coordinator.pid"))
	killed := l.killNode(t, "pg-a1")
	l.killNode(t, "pg-a2")
	_ = syscall.Kill(c1, syscall.SIGKILL)
	newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch0, 120*time.Second)
	t.Logf("region us-east-1 lost: %s is primary %.1fs after kill -9 of c1, pg-a1 and pg-a2", newPrimary, time.Since(killed).Seconds())
	if newPrimary != "pg-b1" {
		t.Fatalf("new primary %s, want pg-b1 (the only member outside us-east-1)", newPrimary)
	}
	if _, err := l.psql(newPrimary, "CREATE TABLE after_failover AS SELECT 2 AS x"); err != nil {
		t.Fatalf("the new primary does not take writes: %v", err)
	}
	// The compliance report shows the failover to pg-b1 with its measured
	// duration (detection to writable).
	testutil.WaitFor(t, 30*time.Second, "the report lists the failover to pg-b1 with its measured duration", func() (bool, error) {
		rep, err := l.report()
		if err != nil {
			return false, err
		}
		for _, r := range rep.Clusters[0].Recoveries {
			if r.Kind == "failover" && r.Node == "pg-b1" && r.OK && r.Measured && r.DurationSeconds > 0 {
				t.Logf("report: failover to pg-b1 measured %.2fs (detection to writable)", r.DurationSeconds)
				return true, nil
			}
		}
		return false, fmt.Errorf("recoveries %+v", rep.Clusters[0].Recoveries)
	})

	// The region comes back: c1 rejoins the Raft cluster; the old nodes'
	// agents restart (PostgreSQL is down after the kill) and the
	// coordinators order both to rejoin as streaming replicas of pg-b1.
	if out, err := l.labScript(t.Context(), "start-coordinator", "c1"); err != nil {
		t.Fatalf("start-coordinator c1: %v\n%s", err, out)
	}
	l.startAgent(t, "pg-a1")
	l.startAgent(t, "pg-a2")
	for _, n := range []string{"pg-a1", "pg-a2"} {
		l.waitHealthyReplica(t, n, 150*time.Second)
		l.waitTable(t, n, "after_failover", 60*time.Second)
	}

	checker.finish(t)
	if checker.writes["pg-a1"] == 0 || checker.writes[newPrimary] == 0 {
		t.Fatalf("the checker saw no write on the old or the new primary: %v", checker.writes)
	}
	out, err := l.ctl("history", "--cluster", "main", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var h ctl.HistoryJSON
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("history --json: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, e := range h.Events {
		seen[e.Kind] = true
	}
	for _, k := range []string{"failover-intent", "primary-set", "failover-step", "failover-result", "rejoin"} {
		if !seen[k] {
			t.Errorf("history has no %s event:\n%s", k, out)
		}
	}
	if t.Failed() {
		for i := 1; i <= 3; i++ {
			out, err := l.ctl("history", "--cluster", "main", "--json", "--address", l.addr(i))
			t.Logf("history as c%d answers it: %v\n%.300s", i, err, out)
		}
	}
}

// TestFailoverAgentKilledPrimaryStaysUp: kill -9 only the primary's agent,
// leaving its PostgreSQL up and writable. Its watchdog fences PostgreSQL at
// the agent's lease deadline, before the coordinators may promote anyone, so
// the write checker — trying every node every 50 ms from before the kill
// until the old node has rejoined — never sees two nodes take writes.
func TestFailoverAgentKilledPrimaryStaysUp(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch0 := l.wantPrimary(t, "pg-a1")
	if _, err := l.psql("pg-a1", "CREATE TABLE before_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitTable(t, n, "before_failover", 30*time.Second)
	}
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	testutil.WaitFor(t, 30*time.Second, "the checker writes on pg-a1", func() (bool, error) {
		return checker.count("pg-a1") > 0, nil
	})
	pmPid := readPid(t, filepath.Join(l.dir, "pg-a1", "pgdata", "postmaster.pid"))
	killed := time.Now()
	if err := syscall.Kill(readPid(t, filepath.Join(l.dir, "pg-a1", "agent.pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pmPid, 0); err != nil {
		t.Fatalf("pg-a1's PostgreSQL is not running after its agent was killed: %v", err)
	}
	newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch0, 90*time.Second)
	t.Logf("failover: %s is primary %.1fs after kill -9 of pg-a1's agent", newPrimary, time.Since(killed).Seconds())
	if l.tryWrite("pg-a1", "two_primaries") {
		t.Fatal("pg-a1 still takes writes after a replica was promoted")
	}
	if _, err := l.psql(newPrimary, "CREATE TABLE after_failover AS SELECT 2 AS x"); err != nil {
		t.Fatalf("the new primary does not take writes: %v", err)
	}
	l.startAgent(t, "pg-a1")
	l.waitHealthyReplica(t, "pg-a1", 180*time.Second)
	l.waitTable(t, "pg-a1", "after_failover", 60*time.Second)
	checker.finish(t)
	if checker.count("pg-a1") == 0 || checker.count(newPrimary) == 0 {
		t.Fatalf("the checker saw no write on the old or the new primary: %v", checker.writes)
	}
}
