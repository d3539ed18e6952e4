package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// Issue 12, item 2: a member recorded as primary whose promotion never
// happened is promoted again, so the cluster does not stay without a
// writable primary.

// waitRecordedStep waits until history has an event of kind at epoch whose
// message says the new primary was recorded and is about to be ordered to
// promote (failover.pause_before_promote holds the leader there); it
// returns the event's node.
func (l *lab) waitRecordedStep(t *testing.T, kind string, epoch uint64) string {
	t.Helper()
	var node string
	testutil.WaitFor(t, 90*time.Second, fmt.Sprintf("%s: the new primary recorded at epoch %d, its promotion not ordered yet", kind, epoch), func() (bool, error) {
		h, err := l.tryHistory()
		if err != nil {
			return false, nil // status answers slowly while the leader changes
		}
		for _, ev := range h {
			if ev.Kind == kind && ev.Epoch == epoch && strings.Contains(ev.Message, "recorded as primary; ordering it to promote") {
				node = ev.Node
				return true, nil
			}
		}
		return false, nil
	})
	return node
}

// waitWritablePrimary waits until node is the recorded primary at epoch,
// reported as primary, and takes a write.
func (l *lab) waitWritablePrimary(t *testing.T, node string, epoch uint64, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%s the writable primary at epoch %d", node, epoch), func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		m, _ := labMember(c, c.Primary)
		if c.Primary != node || c.Epoch != epoch || m.Role != "primary" {
			return false, fmt.Errorf("primary %s (%s) at epoch %d; failover: %s", c.Primary, m.Role, c.Epoch, c.Failover)
		}
		if out, err := l.psql(node, "SELECT pg_is_in_recovery()"); err != nil || out != "f" {
			return false, fmt.Errorf("%s in recovery: %q %v", node, out, err)
		}
		return true, nil
	})
}

// repromoteWait is how long the leader waits before it orders a recorded
// primary that was never promoted to promote again (repromoteInterval).
const repromoteWait = 10 * time.Second

// holdNoPromotion checks, every 500 ms for d, that node stays the recorded
// primary at epoch and in recovery, and returns the distinct failover
// judgements status showed.
func (l *lab) holdNoPromotion(t *testing.T, d time.Duration, node string, epoch uint64) []string {
	t.Helper()
	var seen []string
	for start := time.Now(); time.Since(start) < d; time.Sleep(500 * time.Millisecond) {
		c, err := l.clusterNow()
		if err != nil {
			t.Fatal(err)
		}
		if c.Primary != node || c.Epoch != epoch {
			t.Fatalf("paused: primary %s at epoch %d, want %s at %d (failover: %s)", c.Primary, c.Epoch, node, epoch, c.Failover)
		}
		if out, err := l.psql(node, "SELECT pg_is_in_recovery()"); err != nil || out != "t" {
			t.Fatalf("paused: %s was promoted: %q %v", node, out, err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != c.Failover {
			seen = append(seen, c.Failover)
		}
	}
	return seen
}

func logHistory(t *testing.T, h []ctl.EventJSON) {
	t.Helper()
	for _, ev := range h {
		t.Logf("history: %s %s epoch %d: %s", ev.Kind, ev.Node, ev.Epoch, ev.Message)
	}
}

// TestFailoverPromoteOrderLost: the promote order of a failover cannot be
// delivered (the candidate's agent is killed while the leader waits before
// the order, so its command stream is down when the order goes out) and
// the failover is recorded as failed. The other replica is tagged
// no-failover, so no other member could take over. Once the candidate's
// agent is back, the leader promotes the recorded primary again at the
// same epoch: the cluster ends with a writable primary, the other replica
// follows it, and two nodes never take writes at once.
func TestFailoverPromoteOrderLost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	promoteOrderLost(t, false)
}

// TestFailoverToUnpromotedPrimary: as TestFailoverPromoteOrderLost, but
// the cluster is paused before the candidate's agent comes back: the
// leader only reports the recorded primary that was never promoted, and
// 'pgdrctl failover --to' that node (refused before as "already the
// primary") promotes it at the same epoch.
func TestFailoverToUnpromotedPrimary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	promoteOrderLost(t, true)
}

func promoteOrderLost(t *testing.T, manual bool) {
	l := startLab(t, "PGDR_LAB_PAUSE_BEFORE_PROMOTE=8s")
	epoch := l.wantPrimary(t, "pg-a1")
	tagged := regexp.MustCompile(`(?m)^node: \{name: pg-b1, `)
	l.editAgentYAML(t, "pg-b1", func(s string) string {
		return tagged.ReplaceAllString(s, "node: {name: pg-b1, tags: [no-failover], ")
	})
	l.restartAgent(t, "pg-b1")
	testutil.WaitFor(t, 60*time.Second, "pg-b1 registered with the no-failover tag", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		m, _ := labMember(c, "pg-b1")
		return strings.Contains(strings.Join(m.Tags, ","), "no-failover") && m.Healthy, fmt.Errorf("pg-b1 tags %v healthy %v", m.Tags, m.Healthy)
	})
	if _, err := l.psql("pg-a1", "CREATE TABLE before_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitTable(t, n, "before_failover", 30*time.Second)
	}
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	killed := l.killNode(t, "pg-a1")

	cand := l.waitRecordedStep(t, "failover-step", epoch+1)
	if cand != "pg-a2" {
		t.Fatalf("recorded %s as primary, want pg-a2 (pg-b1 is tagged no-failover)", cand)
	}
	if err := syscall.Kill(readPid(t, filepath.Join(l.dir, "pg-a2", "agent.pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("pg-a2 recorded as primary %.1fs after the kill of pg-a1; its agent killed -9 before the promote order", time.Since(killed).Seconds())
	testutil.WaitFor(t, 90*time.Second, "the failover recorded as failed", func() (bool, error) {
		h, err := l.tryHistory()
		return err == nil && countEvents(h, "failover-result", "failed") > 0, err
	})
	if out, err := l.psql("pg-a2", "SELECT pg_is_in_recovery()"); err != nil || out != "t" {
		t.Fatalf("pg-a2 was promoted although its order could not be delivered: %q %v", out, err)
	}
	if manual {
		if out, err := l.ctl("pause", "--cluster", "main", "--reason", "promote by hand"); err != nil {
			t.Fatalf("pause: %v\n%s", err, out)
		}
	}
	l.startAgent(t, "pg-a2")
	if manual {
		seen := l.holdNoPromotion(t, 2*repromoteWait, "pg-a2", epoch+1)
		out, err := l.ctl("failover", "--cluster", "main", "--to", "pg-a2", "--json")
		if err != nil {
			t.Fatalf("failover --to the recorded primary: %v\n%s", err, out)
		}
		if judgementWith(seen, "still in recovery") == "" {
			t.Fatalf("paused: the judgement never reported the unpromoted primary: %q", seen)
		}
		t.Logf("failover --to pg-a2: %s", out)
		if out, err := l.ctl("resume", "--cluster", "main"); err != nil {
			t.Fatalf("resume: %v\n%s", err, out)
		}
	}
	l.waitWritablePrimary(t, "pg-a2", epoch+1, 120*time.Second)
	t.Logf("pg-a2 is the writable primary at epoch %d, %.1fs after the kill", epoch+1, time.Since(killed).Seconds())
	wantKind := "failover-result"
	if manual {
		wantKind = "manual-failover-result"
	}
	// The result follows the re-pointing of pg-b1.
	done := fmt.Sprintf("done: pg-a2 is primary at epoch %d", epoch+1)
	var h []ctl.EventJSON
	testutil.WaitFor(t, 90*time.Second, "the result of the repeated promotion", func() (bool, error) {
		var err error
		h, err = l.tryHistory()
		return err == nil && countEvents(h, wantKind, done) > 0, err
	})
	if countEvents(h, "promote-retry", "pg-a2") == 0 || countEvents(h, wantKind, done) != 1 {
		logHistory(t, h)
		t.Fatalf("history has no promote-retry event or not one %s %q", wantKind, done)
	}
	if _, err := l.psql("pg-a2", "CREATE TABLE after_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	l.waitTable(t, "pg-b1", "after_failover", 90*time.Second)
	checker.finish(t)
	if checker.count("pg-a2") == 0 {
		t.Fatalf("the checker saw no write on the promoted pg-a2: %v", checker.writes)
	}
}

// TestSwitchoverLeaderKilledMidway: the coordinator leader is killed in a
// switchover after it recorded the target as primary and before it ordered
// the promotion (failover.pause_before_promote holds it there). The next
// leader resumes the switchover like an interrupted failover: the target
// is promoted at the recorded epoch, the switchover's result is recorded,
// the other replica follows, the old primary (stopped cleanly) rejoins as a
// replica, and two nodes never take writes at once.
func TestSwitchoverLeaderKilledMidway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t, "PGDR_LAB_PAUSE_BEFORE_PROMOTE=8s")
	epoch := l.wantPrimary(t, "pg-a1")
	testutil.WaitFor(t, 60*time.Second, "both replicas healthy and streaming", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		for _, n := range []string{"pg-a2", "pg-b1"} {
			m, _ := labMember(c, n)
			if m.Role != "replica" || !m.Healthy || !m.Streaming {
				return false, fmt.Errorf("%s: role %s healthy %v streaming %v problems %v", n, m.Role, m.Healthy, m.Streaming, m.Problems)
			}
		}
		return true, nil
	})
	if _, err := l.psql("pg-a1", "CREATE TABLE before_switchover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	swDone := make(chan string, 1)
	go func() {
		out, err := l.ctl("switchover", "--cluster", "main", "--to", "pg-a2", "--timeout", "2m")
		swDone <- fmt.Sprintf("%v: %s", err, out)
	}()
	if n := l.waitRecordedStep(t, "switchover-step", epoch+1); n != "pg-a2" {
		t.Fatalf("recorded %s as primary, want pg-a2", n)
	}
	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(readPid(t, filepath.Join(l.dir, leader, "coordinator.pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("pg-a2 recorded as primary in the switchover; leader %s killed -9 before the promote order", leader)
	if out, err := l.psql("pg-a2", "SELECT pg_is_in_recovery()"); err != nil || out != "t" {
		t.Fatalf("pg-a2 was promoted before its order (pause_before_promote not in effect?): %q %v", out, err)
	}
	l.waitWritablePrimary(t, "pg-a2", epoch+1, 120*time.Second)
	t.Logf("pg-a2 is the writable primary at epoch %d, %.1fs after the leader was killed", epoch+1, time.Since(killed).Seconds())
	var h []ctl.EventJSON
	testutil.WaitFor(t, 90*time.Second, "the switchover's result", func() (bool, error) {
		var err error
		h, err = l.tryHistory()
		return err == nil && countEvents(h, "switchover-result", fmt.Sprintf("done: pg-a2 is primary at epoch %d", epoch+1)) == 1, err
	})
	if countEvents(h, "switchover-step", "resumed by coordinator") != 1 {
		logHistory(t, h)
		t.Fatal("history has no switchover-step saying the switchover was resumed")
	}
	select {
	case res := <-swDone:
		t.Logf("pgdrctl switchover (its leader killed): %s", strings.TrimSpace(res))
	case <-time.After(3 * time.Minute):
		t.Fatal("pgdrctl switchover did not return")
	}
	if _, err := l.psql("pg-a2", "CREATE TABLE after_switchover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	l.waitTable(t, "pg-b1", "after_switchover", 90*time.Second)
	l.waitHealthyReplica(t, "pg-a1", 180*time.Second)
	l.waitTable(t, "pg-a1", "after_switchover", 90*time.Second)
	checker.finish(t)
}
