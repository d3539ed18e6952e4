package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// report runs pgdrctl report --json on the lab.
func (l *lab) report() (ctl.ReportJSON, error) {
	var v ctl.ReportJSON
	out, err := l.ctl("report", "--json", "--cluster", "main", "--since", "1h")
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return v, fmt.Errorf("report --json: %v\n%s", err, out)
	}
	if len(v.Clusters) != 1 {
		return v, fmt.Errorf("report --json has %d clusters", len(v.Clusters))
	}
	return v, nil
}

// TestReportFailoverSwitchoverBreach: after a kill -9 failover and a
// switchover on the lab, `pgdrctl report --json` lists each with its
// measured duration (detection or request to a writable new primary), and
// an RPO target of 1ms, below what the lab achieves, is flagged as a
// breach; the report says no drill is recorded.
func TestReportFailoverSwitchoverBreach(t *testing.T) {
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

	killed := l.killNode(t, "pg-a1")
	promoted, epoch1 := l.waitNewPrimary(t, "pg-a1", epoch0, 90*time.Second)
	t.Logf("failover: %s is primary %.1fs after kill -9 of pg-a1", promoted, time.Since(killed).Seconds())
	other := map[string]string{"pg-a2": "pg-b1", "pg-b1": "pg-a2"}[promoted]
	l.waitHealthyReplica(t, other, 60*time.Second)
	start := time.Now()
	if out, err := l.ctl("switchover", "--cluster", "main", "--to", other); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	t.Logf("switchover to %s took %.1fs", other, time.Since(start).Seconds())
	l.waitNewPrimary(t, promoted, epoch1, 30*time.Second)

	if out, err := l.ctl("policy", "set", "--cluster", "main", "--target-rpo", "1ms"); err != nil {
		t.Fatalf("policy set --target-rpo 1ms: %v\n%s", err, out)
	}
	var rep ctl.ReportJSON
	testutil.WaitFor(t, 30*time.Second, "the report flags the 1ms RPO target", func() (bool, error) {
		var err error
		if rep, err = l.report(); err != nil {
			return false, err
		}
		c := rep.Clusters[0]
		for _, b := range c.Compliance.Breaches {
			if (b.Target == "archive_rpo" || b.Target == "failover_rpo") && b.TargetSeconds == 0.001 {
				return true, nil
			}
		}
		return false, fmt.Errorf("breaches %+v, archive RPO %+v", c.Compliance.Breaches, c.Compliance.ArchiveRPO)
	})
	c := rep.Clusters[0]
	kinds := map[string]ctl.RecoveryJSON{}
	for _, r := range c.Recoveries {
		kinds[r.Kind] = r
	}
	fo, so := kinds["failover"], kinds["switchover"]
	if !fo.OK || !fo.Measured || fo.DurationSeconds <= 0 || fo.DurationSeconds > 90 || fo.Node != promoted || fo.OldPrimary != "pg-a1" {
		t.Errorf("failover in the report: %+v", fo)
	}
	if !so.OK || !so.Measured || so.DurationSeconds <= 0 || so.DurationSeconds > 30 || so.Node != other {
		t.Errorf("switchover in the report: %+v", so)
	}
	if c.Drills.Recorded || c.Drills.Note != "no drill recorded" {
		t.Errorf("drills: %+v", c.Drills)
	}
	if c.Compliance.Targets.RPO != "1ms" || c.Compliance.Targets.RTO != "15m" {
		t.Errorf("targets: %+v", c.Compliance.Targets)
	}
	t.Logf("measured: failover %.2fs, switchover %.2fs; breaches %+v", fo.DurationSeconds, so.DurationSeconds, c.Compliance.Breaches)
	// The breach went out as a history event (and so through the webhooks),
	// once the leader's next compliance round decided it.
	testutil.WaitFor(t, 20*time.Second, "a target-breached event in history", func() (bool, error) {
		out, err := l.ctl("history", "--cluster", "main", "--json")
		if err != nil {
			return false, err
		}
		var h ctl.HistoryJSON
		if err := json.Unmarshal(out, &h); err != nil {
			return false, err
		}
		for _, e := range h.Events {
			if e.Kind == "target-breached" {
				return true, nil
			}
		}
		return false, fmt.Errorf("no target-breached event among %d", len(h.Events))
	})
}
