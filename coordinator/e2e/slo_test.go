package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// writeAvailability is cluster main's SLO as `pgdrctl status --json` shows it.
func (l *lab) writeAvailability() (*ctl.WriteAvailabilityJSON, error) {
	c, err := l.clusterNow()
	if err != nil {
		return nil, err
	}
	if c.Compliance == nil || c.Compliance.WriteAvailability == nil {
		return nil, fmt.Errorf("status shows no write availability for main")
	}
	return c.Compliance.WriteAvailability, nil
}

// gapWriter tries a write on every node every 50 ms and keeps, per node,
// the first and last time one committed.
type gapWriter struct {
	mu          sync.Mutex
	first, last map[string]time.Time
	stop, done  chan struct{}
}

func startGapWriter(l *lab, table string, nodes ...string) *gapWriter {
	w := &gapWriter{first: map[string]time.Time{}, last: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for deadline := time.Now().Add(checkerBound); time.Now().Before(deadline); {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			var wg sync.WaitGroup
			for _, n := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if l.tryWriteWithin(n, table, 500*time.Millisecond) {
						now := time.Now()
						w.mu.Lock()
						if w.first[n].IsZero() {
							w.first[n] = now
						}
						w.last[n] = now
						w.mu.Unlock()
					}
				}()
			}
			wg.Wait()
		}
	}()
	return w
}

func (w *gapWriter) times(node string) (first, last time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first[node], w.last[node]
}

func (w *gapWriter) finish() {
	close(w.stop)
	<-w.done
}

// TestSLOFailoverConsumesBudget: kill -9 of the primary (postmaster and
// agent) costs the write-availability SLO about the write gap clients
// measured: the bad seconds recorded in Raft grow by the gap between the
// last write on the old primary and the first on the new one, within 2 s
// (the heartbeat's and the leader's tick are 1 s).
func TestSLOFailoverConsumesBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch0 := l.wantPrimary(t, "pg-a1")
	var base *ctl.WriteAvailabilityJSON
	testutil.WaitFor(t, 150*time.Second, "a recorded minute of write availability", func() (bool, error) {
		wa, err := l.writeAvailability()
		if err != nil {
			return false, err
		}
		base = wa
		return wa.GoodSeconds >= 20 && wa.RecordedThrough != "", fmt.Errorf("write availability %+v", wa)
	})
	t.Logf("before the failover: %d s good, %d s bad recorded through %s; lag %+v", base.GoodTotal, base.BadTotal, base.RecordedThrough, base.Lag)
	if len(base.Lag) != 2 {
		t.Errorf("heartbeat lag reported for %d members, want the 2 replicas: %+v", len(base.Lag), base.Lag)
	}
	if _, err := l.psql("pg-a1", "CREATE TABLE slo_writes AS SELECT 'pg-a1'::text AS node"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitTable(t, n, "slo_writes", 30*time.Second)
	}
	nodes := []string{"pg-a1", "pg-a2", "pg-b1"}
	w := startGapWriter(l, "slo_writes", nodes...)
	defer w.finish()
	testutil.WaitFor(t, 30*time.Second, "3 s of writes on pg-a1", func() (bool, error) {
		first, last := w.times("pg-a1")
		return !first.IsZero() && last.Sub(first) > 3*time.Second && time.Since(last) < time.Second, nil
	})
	base, err := l.writeAvailability()
	if err != nil {
		t.Fatal(err)
	}
	killed := l.killNode(t, "pg-a1")
	newPrimary, _ := l.waitNewPrimary(t, "pg-a1", epoch0, 120*time.Second)
	var firstNew time.Time
	testutil.WaitFor(t, 60*time.Second, "writes on the new primary "+newPrimary, func() (bool, error) {
		firstNew, _ = w.times(newPrimary)
		return !firstNew.IsZero(), nil
	})
	_, lastOld := w.times("pg-a1")
	gap := firstNew.Sub(lastOld)
	t.Logf("kill -9 of pg-a1 at %s: last write on pg-a1 %s, first on %s %s: a write gap of %.2fs",
		killed.Format("15:04:05.000"), lastOld.Format("15:04:05.000"), newPrimary, firstNew.Format("15:04:05.000"), gap.Seconds())

	// The leader records a minute once it ended: wait for the seconds up to
	// 10 s after the first new write.
	var after *ctl.WriteAvailabilityJSON
	testutil.WaitFor(t, 150*time.Second, "the seconds after the failover to be recorded", func() (bool, error) {
		wa, err := l.writeAvailability()
		if err != nil {
			return false, err
		}
		through, err := time.Parse(time.RFC3339, wa.RecordedThrough)
		after = wa
		return err == nil && through.After(firstNew.Add(10*time.Second)), fmt.Errorf("recorded through %s (%v)", wa.RecordedThrough, err)
	})
	bad := float64(after.BadTotal - base.BadTotal)
	t.Logf("after the failover: %d s good, %d s bad (%d unobserved) recorded through %s; ratio %.6f, budget left %.4f; bad seconds added %v against a write gap of %.2fs",
		after.GoodTotal, after.BadTotal, after.UnobservedSeconds, after.RecordedThrough, after.Ratio, after.BudgetRemaining, bad, gap.Seconds())
	if math.Abs(bad-gap.Seconds()) > 2 {
		t.Fatalf("the failover added %v bad seconds, the clients' write gap was %.2fs (tolerance 2 s)", bad, gap.Seconds())
	}
	if after.BudgetRemaining >= base.BudgetRemaining {
		t.Fatalf("error budget left %v, before %v: the failover consumed none", after.BudgetRemaining, base.BudgetRemaining)
	}
	if after.UnobservedSeconds != base.UnobservedSeconds {
		t.Errorf("unobserved seconds grew from %d to %d without a coordinator leader change", base.UnobservedSeconds, after.UnobservedSeconds)
	}
	// The leader serves the recorded totals as counters; every agent its
	// heartbeat's age.
	testutil.WaitFor(t, 30*time.Second, "the leader's metrics to show the recorded bad seconds", func() (bool, error) {
		for i := 1; i <= 3; i++ {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", l.base+10*i+3))
			// (not a substring match: the HELP line reads "pgdr_coordinator_leader 1 while …")
			if lead, ok := metricValue(body, "pgdr_coordinator_leader"); err != nil || !ok || lead != 1 {
				continue
			}
			v, ok := metricValue(body, `pgdr_cluster_write_seconds_total{cluster="main",result="bad"}`)
			if !ok || v < float64(after.BadTotal) || !strings.Contains(body, `pgdr_cluster_error_budget_remaining_ratio{cluster="main"}`) ||
				!strings.Contains(body, `pgdr_cluster_write_availability_ratio{cluster="main"}`) {
				return false, fmt.Errorf("leader c%d: bad seconds %v (%v), want at least %d", i, v, ok, after.BadTotal)
			}
			return true, nil
		}
		return false, fmt.Errorf("no coordinator serves pgdr_coordinator_leader 1")
	})
	body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", l.healthPort("pg-b1")))
	if _, ok := metricValue(body, `pgdr_agent_heartbeat_age_seconds{cluster="main",node="pg-b1"}`); err != nil || !ok {
		t.Errorf("pg-b1's agent serves no heartbeat age: %v", err)
	}
	out, err := l.ctl("report", "--cluster", "main", "--since", "1h")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report excerpt:\n%.2000s", out)
}

// httpGet is the body of a plain HTTP GET (the lab's metrics endpoints).
func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metricValue is the value of the series named exactly (name{labels}) in
// a Prometheus text exposition.
func metricValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestSLOLeaderChangeKeepsBudget: kill -9 of the coordinator leader while
// the primary keeps writing. The seconds no leader judged (the old
// leader's last, unsent minute and the election) are covered by the
// writer's unbroken run of heartbeats: they count good, none unobserved,
// and every second between the two leaders' records is accounted.
func TestSLOLeaderChangeKeepsBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	var base *ctl.WriteAvailabilityJSON
	testutil.WaitFor(t, 150*time.Second, "a recorded minute of write availability", func() (bool, error) {
		wa, err := l.writeAvailability()
		if err != nil {
			return false, err
		}
		base = wa
		return wa.GoodSeconds >= 20 && wa.RecordedThrough != "", fmt.Errorf("write availability %+v", wa)
	})
	// Half a minute into a minute: the old leader's unsent batch holds
	// about 30 judged seconds that only the writer's run can account for.
	testutil.WaitFor(t, 70*time.Second, "the middle of a minute", func() (bool, error) {
		s := time.Now().Second()
		return s >= 25 && s <= 40, nil
	})
	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, filepath.Join(l.dir, leader, "coordinator.pid"))
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("before: %d s good, %d s bad, %d unobserved, recorded through %s; leader %s killed -9 at %s",
		base.GoodTotal, base.BadTotal, base.UnobservedSeconds, base.RecordedThrough, leader, killed.Format("15:04:05.000"))
	var after *ctl.WriteAvailabilityJSON
	testutil.WaitFor(t, 180*time.Second, "the new leader to record the seconds after the kill", func() (bool, error) {
		wa, err := l.writeAvailability()
		if err != nil {
			return false, nil // status answers slowly while the leader changes
		}
		through, err := time.Parse(time.RFC3339, wa.RecordedThrough)
		after = wa
		return err == nil && through.After(killed.Add(20*time.Second)), fmt.Errorf("recorded through %s (%v)", wa.RecordedThrough, err)
	})
	newLeader, _ := l.leaderName()
	t0, _ := time.Parse(time.RFC3339, base.RecordedThrough)
	t1, _ := time.Parse(time.RFC3339, after.RecordedThrough)
	accounted := int64(after.GoodTotal+after.BadTotal) - int64(base.GoodTotal+base.BadTotal)
	t.Logf("after (leader %s): %d s good, %d s bad, %d unobserved, recorded through %s: %d s accounted for %s",
		newLeader, after.GoodTotal, after.BadTotal, after.UnobservedSeconds, after.RecordedThrough, accounted, t1.Sub(t0))
	if bad := after.BadTotal - base.BadTotal; bad > 2 {
		t.Errorf("the leader change cost %d bad seconds while the primary kept writing", bad)
	}
	if un := after.UnobservedSeconds - base.UnobservedSeconds; un > 2 {
		t.Errorf("%d seconds counted unobserved though the writer's run of heartbeats covered them", un)
	}
	if d := int64(t1.Sub(t0) / time.Second); accounted < d-2 || accounted > d {
		t.Errorf("%d seconds accounted between the records, %d passed", accounted, d)
	}
}
