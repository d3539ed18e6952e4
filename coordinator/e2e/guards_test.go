package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// countEvents counts history events of kind whose message contains sub.
func countEvents(h []ctl.EventJSON, kind, sub string) int {
	n := 0
	for _, ev := range h {
		if ev.Kind == kind && strings.Contains(ev.Message, sub) {
			n++
		}
	}
	return n
}

// leaderName returns the coordinator status names as leader.
func (l *lab) leaderName() (string, error) {
	v, _, err := l.status()
	if err != nil {
		return "", err
	}
	for _, c := range v.Coordinators {
		if c.Leader {
			return c.Name, nil
		}
	}
	return "", fmt.Errorf("no leader in status")
}

// TestFailoverGuards: the primary dies while the cluster is in maintenance
// mode, with one replica tagged no-failover and the other lagging over
// maximum_lag_on_failover. Paused: nothing is promoted and the judgement
// says why. Resumed: still nothing, and the refusal names both replicas'
// reasons in status and history. The tag lifted: that replica is promoted
// and the lagging one follows it and catches up.
func TestFailoverGuards(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch := l.wantPrimary(t, "pg-a1")

	tagged := regexp.MustCompile(`(?m)^node: \{name: pg-a2, `)
	l.editAgentYAML(t, "pg-a2", func(s string) string {
		return tagged.ReplaceAllString(s, "node: {name: pg-a2, tags: [no-failover], ")
	})
	l.restartAgent(t, "pg-a2")
	testutil.WaitFor(t, 60*time.Second, "pg-a2 registered with the no-failover tag", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		m, _ := labMember(c, "pg-a2")
		return strings.Contains(strings.Join(m.Tags, ","), "no-failover") && m.Healthy, fmt.Errorf("pg-a2 tags %v healthy %v", m.Tags, m.Healthy)
	})
	if out, err := l.ctl("pause", "--cluster", "main", "--reason", "guards test"); err != nil {
		t.Fatalf("pause: %v\n%s", err, out)
	}

	// pg-b1 stops receiving WAL (no primary to stream from, no archive).
	dead := testutil.FreePort(t)
	for _, sql := range []string{
		fmt.Sprintf("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=pg-b1 connect_timeout=1'", dead),
		"ALTER SYSTEM SET restore_command = ''",
		"SELECT pg_reload_conf()",
	} {
		if out, err := l.psql("pg-b1", sql); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	testutil.WaitFor(t, 60*time.Second, "pg-b1 stops streaming", func() (bool, error) {
		out, err := l.psql("pg-b1", "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")
		return err == nil && out == "0", err
	})
	// About 4 MB of WAL that pg-a2 receives and pg-b1 does not.
	if out, err := l.psql("pg-a1", "CREATE TABLE guard_pad AS SELECT g, repeat(md5(g::text), 30) AS pad FROM generate_series(1, 4000) g"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	l.waitTable(t, "pg-a2", "(SELECT 1 FROM guard_pad HAVING count(*) = 4000) AS x", 60*time.Second)
	testutil.WaitFor(t, 60*time.Second, "the leader sees pg-a1's LSN past the pad", func() (bool, error) {
		out, err := l.psql("pg-a1", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
		if err != nil {
			return false, err
		}
		primaryLSN, _ := strconv.ParseFloat(out, 64)
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		b1, _ := labMember(c, "pg-b1")
		a2, _ := labMember(c, "pg-a2")
		// Compare with the primary's position: pg-a2 close, pg-b1 > 1 MiB
		// behind (the default maximum_lag_on_failover).
		a2LSN, _ := wal.ParseLSN(a2.ReceiveLSN)
		b1LSN, _ := wal.ParseLSN(b1.ReceiveLSN)
		return primaryLSN-float64(a2LSN) < 64<<10 && primaryLSN-float64(b1LSN) > 2<<20, fmt.Errorf("primary at %.0f, pg-a2 received %s, pg-b1 %s", primaryLSN, a2.ReceiveLSN, b1.ReceiveLSN)
	})
	// The leader's last sample of pg-a1 must be after the pad too: status
	// (answered by the leader, from its latest reports) shows pg-a1's LSN
	// at or past its position now.
	padEnd, err := l.psql("pg-a1", "SELECT pg_current_wal_lsn()")
	if err != nil {
		t.Fatal(err)
	}
	padEndLSN, err := wal.ParseLSN(padEnd)
	if err != nil {
		t.Fatalf("pg_current_wal_lsn %q: %v", padEnd, err)
	}
	testutil.WaitFor(t, 60*time.Second, "the leader has pg-a1's LSN past the pad", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		a1, _ := labMember(c, "pg-a1")
		return a1.LSNBytes >= uint64(padEndLSN), fmt.Errorf("the leader has pg-a1 at %s, want %s or later", a1.LSN, padEnd)
	})

	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	killed := l.killNode(t, "pg-a1")

	// 1. Paused: no promotion, reported.
	seen := l.holdNoFailover(t, labLeaseTTL+5*time.Second, epoch, nil)
	t.Logf("paused, pg-a1 killed: judgements %q", seen)
	if !strings.Contains(strings.Join(seen, "\n"), "cluster paused") {
		t.Fatalf("the judgement never said the cluster is paused: %q", seen)
	}

	// 2. Resumed: no candidate (tag, lag), reported in status and history.
	if out, err := l.ctl("resume", "--cluster", "main"); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	var judgement string
	testutil.WaitFor(t, 30*time.Second, "the no-candidate judgement", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		judgement = c.Failover
		return strings.Contains(judgement, "no candidate"), fmt.Errorf("failover: %s", judgement)
	})
	for _, want := range []string{"pg-a2: tagged no-failover", "pg-b1: lags"} {
		if !strings.Contains(judgement, want) {
			t.Fatalf("judgement %q does not say %q", judgement, want)
		}
	}
	seen = l.holdNoFailover(t, 5*time.Second, epoch, nil)
	t.Logf("resumed: judgements %q", seen)
	var refusal *ctl.EventJSON
	h := l.history(t)
	for i, ev := range h {
		if ev.Kind == "failover-intent" {
			t.Fatalf("a failover was started: %+v", ev)
		}
		if ev.Kind == "failover-refused" && strings.Contains(ev.Message, "no candidate") {
			refusal = &h[i]
		}
	}
	if refusal == nil {
		t.Fatal("history has no failover-refused event for the no-candidate judgement")
	}
	if refusal.Details["rejected:pg-a2"] != "tagged no-failover" || !strings.HasPrefix(refusal.Details["rejected:pg-b1"], "lags ") {
		t.Fatalf("the refusal's details do not name both reasons: %+v", refusal.Details)
	}
	t.Logf("history: failover-refused %q %v", refusal.Message, refusal.Details)

	// 3. The tag lifted: pg-a2 is promoted; pg-b1 follows it and catches up.
	l.editAgentYAML(t, "pg-a2", func(s string) string { return strings.Replace(s, "tags: [no-failover], ", "", 1) })
	l.restartAgent(t, "pg-a2")
	name, epoch2 := l.waitNewPrimary(t, "pg-a1", epoch, 90*time.Second)
	t.Logf("%s promoted at epoch %d, %.1fs after the kill", name, epoch2, time.Since(killed).Seconds())
	if name != "pg-a2" {
		t.Fatalf("promoted %s, want pg-a2 (pg-b1 lags)", name)
	}
	l.waitTable(t, "pg-b1", "(SELECT 1 FROM guard_pad HAVING count(*) = 4000) AS x", 90*time.Second)
	checker.finish(t)
}

// TestFailoverLeaderKilledMidway: the coordinator leader is killed after
// it recorded the new primary in Raft and before it ordered the promotion
// (failover.pause_before_promote holds it there). The next leader finds
// the unfinished failover in the history and completes it: the same
// candidate is promoted once, at the recorded epoch, the other replica
// follows it, the result is recorded, and no node other than the
// candidate is ever promoted; no two nodes accept writes at once.
func TestFailoverLeaderKilledMidway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t, "PGDR_LAB_PAUSE_BEFORE_PROMOTE=5s")
	epoch := l.wantPrimary(t, "pg-a1")
	if _, err := l.psql("pg-a1", "CREATE TABLE before_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitTable(t, n, "before_failover", 30*time.Second)
	}
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	killed := l.killNode(t, "pg-a1")

	var cand string
	testutil.WaitFor(t, 60*time.Second, "the new primary recorded in Raft, its promotion not ordered yet", func() (bool, error) {
		h, err := l.tryHistory()
		if err != nil {
			return false, nil // status answers slowly while the leader changes
		}
		for _, ev := range h {
			if ev.Kind == "failover-step" && ev.Epoch == epoch+1 && strings.Contains(ev.Message, "recorded as primary; ordering it to promote") {
				cand = ev.Node
				return true, nil
			}
		}
		return false, nil
	})
	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, filepath.Join(l.dir, leader, "coordinator.pid"))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s recorded as primary %.1fs after the kill of pg-a1; leader %s killed -9", cand, time.Since(killed).Seconds(), leader)
	if out, err := l.psql(cand, "SELECT pg_is_in_recovery()"); err != nil || out != "t" {
		t.Fatalf("%s was promoted before its order (pause_before_promote not in effect?): %q %v", cand, out, err)
	}

	name, epoch2 := l.waitNewPrimary(t, "pg-a1", epoch, 90*time.Second)
	t.Logf("%s is primary at epoch %d, %.1fs after the kill", name, epoch2, time.Since(killed).Seconds())
	if name != cand || epoch2 != epoch+1 {
		t.Fatalf("primary %s at epoch %d, want the recorded %s at %d", name, epoch2, cand, epoch+1)
	}
	var h []ctl.EventJSON
	testutil.WaitFor(t, 90*time.Second, "the failover's result", func() (bool, error) {
		var err error
		h, err = l.tryHistory()
		return err == nil && countEvents(h, "failover-result", "") > 0, err
	})
	other := "pg-b1"
	if cand == "pg-b1" {
		other = "pg-a2"
	}
	for _, c := range []struct {
		kind, sub string
		want      int
	}{
		{"failover-intent", "", 1},
		{"failover-step", "resumed by coordinator", 1},
		{"failover-step", "promoted", 1},
		{"failover-step", other + " follows " + cand, 1},
		{"failover-result", fmt.Sprintf("done: %s is primary at epoch %d", cand, epoch+1), 1},
		{"failover-result", "", 1},
	} {
		if got := countEvents(h, c.kind, c.sub); got != c.want {
			for _, ev := range h {
				t.Logf("history: %s %s epoch %d: %s", ev.Kind, ev.Node, ev.Epoch, ev.Message)
			}
			t.Fatalf("%d %s events with %q, want %d", got, c.kind, c.sub, c.want)
		}
	}
	if out, err := l.psql(other, "SELECT pg_is_in_recovery()"); err != nil || out != "t" {
		t.Fatalf("%s: in recovery %q %v", other, out, err)
	}
	if _, err := l.psql(cand, "CREATE TABLE after_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	l.waitTable(t, other, "after_failover", 60*time.Second)
	checker.finish(t)
}
