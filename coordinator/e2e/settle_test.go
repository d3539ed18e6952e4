package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestFailoverAfterUnsettledCandidateDies: review D10 in the lab. The
// primary dies; the candidate's agent is stopped (SIGSTOP) while the leader
// waits before the promote order (failover.pause_before_promote), so the
// order goes out and gets no answer: its promotion is unsettled. Then the
// candidate's host dies (agent and postmaster killed). The leader cannot
// fence it, and once the order's settle deadline (its start deadline plus
// the lease TTL, plus the safety margin) has passed, it counts the
// candidate as settled and promotes the third member: the cluster ends
// with a writable primary without 'pgdrctl failover --force', and two
// nodes never take writes at once.
func TestFailoverAfterUnsettledCandidateDies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t, "PGDR_LAB_PAUSE_BEFORE_PROMOTE=8s")
	epoch := l.wantPrimary(t, "pg-a1")
	testutil.WaitFor(t, 60*time.Second, "both replicas healthy", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		a2, _ := labMember(c, "pg-a2")
		b1, _ := labMember(c, "pg-b1")
		return a2.Healthy && b1.Healthy, fmt.Errorf("pg-a2 healthy %v, pg-b1 healthy %v", a2.Healthy, b1.Healthy)
	})
	checker := startWriteChecker(t, l, "pg-a1", "pg-a2", "pg-b1")
	killed := l.killNode(t, "pg-a1")

	cand := l.waitRecordedStep(t, "failover-step", epoch+1)
	other := map[string]string{"pg-a2": "pg-b1", "pg-b1": "pg-a2"}[cand]
	if other == "" {
		t.Fatalf("recorded %s as primary, want pg-a2 or pg-b1", cand)
	}
	agentPid := readPid(t, filepath.Join(l.dir, cand, "agent.pid"))
	if err := syscall.Kill(agentPid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s recorded as primary %.1fs after the kill of pg-a1; its agent stopped before the promote order", cand, time.Since(killed).Seconds())
	// The order goes out to the stopped agent and gets no answer.
	var h []ctl.EventJSON
	testutil.WaitFor(t, 150*time.Second, "the promote order's result: no answer, unsettled", func() (bool, error) {
		var err error
		if h, err = l.tryHistory(); err != nil {
			return false, nil
		}
		for _, ev := range h {
			if ev.Kind == "failover-result" && ev.Node == cand && ev.Epoch == epoch+1 {
				if ev.Details["promote"] != "unsettled" {
					return false, fmt.Errorf("result %q %v is not unsettled", ev.Message, ev.Details)
				}
				return true, nil
			}
		}
		return false, nil
	})
	l.killNode(t, cand) // its host dies: nobody can fence it any more
	_ = syscall.Kill(agentPid, syscall.SIGCONT)
	t.Logf("%s's promotion is unsettled and its host is gone (%.1fs after the kill of pg-a1)", cand, time.Since(killed).Seconds())

	l.waitWritablePrimary(t, other, epoch+2, 180*time.Second)
	t.Logf("%s is the writable primary at epoch %d, %.1fs after the kill of pg-a1", other, epoch+2, time.Since(killed).Seconds())
	h = l.history(t)
	if countEvents(h, "promote-settled", "settle deadline") == 0 {
		logHistory(t, h)
		t.Fatalf("history has no promote-settled event for %s's settle deadline", cand)
	}
	for _, ev := range h {
		if ev.Kind == "promote-settled" && ev.Node != cand {
			t.Fatalf("promote-settled for %s, want %s: %s", ev.Node, cand, ev.Message)
		}
		if strings.HasPrefix(ev.Kind, "manual-") {
			t.Fatalf("a manual failover in history: %s %s", ev.Kind, ev.Message)
		}
	}
	if _, err := l.psql(other, "CREATE TABLE after_settle AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	checker.finish(t)
	if checker.count(other) == 0 {
		t.Fatalf("the checker saw no write on the promoted %s: %v", other, checker.writes)
	}
}
