package e2e

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestDrillRealAgents (issue 17, restore drills): on the lab, after a
// full backup of tier daily, `pgdrctl drill run --tier daily --wait` on a
// replica (prefer-standby) passes: the agent restored the backup into a
// scratch directory, replayed the archive, ran pg_amcheck; the drill
// shows in `pgdrctl drills --json` with its timings. Then, with a policy
// whose drill section holds a SQL check with the wrong expectation, the
// drill fails naming the check, is listed failed with that reason, and
// the leader sends a drill-failed webhook.
func TestDrillRealAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	sink := &webhookSink{secret: []byte("lab-webhook-secret")}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	t.Setenv("PGDR_LAB_WEBHOOK_URL", srv.URL+"/pgdr")
	t.Setenv("PGDR_LAB_WEBHOOK_SECRET", string(sink.secret))
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitHealthyReplica(t, n, 60*time.Second)
	}
	out, err := l.ctl("backup", "run", "--cluster", "main", "--tier", "daily", "--wait", "--json")
	if err != nil {
		t.Fatalf("backup run --tier daily --wait: %v\n%s", err, out)
	}
	start := time.Now()
	// Right after the backup a standby may be judged unhealthy for a
	// moment (a late report on a loaded machine): the drill is refused,
	// naming why, and asked again.
	testutil.WaitFor(t, 60*time.Second, "a drill placed on a healthy standby", func() (bool, error) {
		out, err = l.ctl("drill", "run", "--cluster", "main", "--tier", "daily", "--wait", "--json")
		if err != nil && strings.Contains(err.Error(), "no member can run the drill") {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("drill run --wait: %v\n%s", err, out)
	}
	var res ctl.DrillRunResultJSON
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("drill run --json: %v\n%s", err, out)
	}
	d := res.Drill
	t.Logf("drill %s on %s in %s: %s", d.ID, d.Node, time.Since(start).Round(time.Second), out)
	if d.Result != "ok" || (d.Node != "pg-a2" && d.Node != "pg-b1") || d.Backup == "" || d.Timings == nil || d.Timings.Total <= 0 ||
		d.Timings.FetchWrite <= 0 || d.AmcheckOK == nil || !*d.AmcheckOK {
		t.Fatalf("drill %+v", d)
	}
	out, err = l.ctl("drills", "--cluster", "main", "--json")
	if err != nil {
		t.Fatalf("drills --json: %v\n%s", err, out)
	}
	var list ctl.DrillsJSON
	if err := json.Unmarshal(out, &list); err != nil || len(list.Clusters) != 1 || len(list.Clusters[0].Drills) != 1 {
		t.Fatalf("drills --json: %v\n%s", err, out)
	}
	if got := list.Clusters[0].Drills[0]; got.ID != d.ID || got.Result != "ok" || got.Timings == nil || got.Timings.Replay <= 0 {
		t.Fatalf("listed drill %+v", got)
	}
	// The compliance report counts it and takes its restore time (fetch
	// and write plus replay) as the cluster's measured RTO.
	rep, err := l.report()
	if err != nil {
		t.Fatal(err)
	}
	if dr := rep.Clusters[0].Drills; !dr.Recorded || dr.OK != 1 || dr.Last == nil || dr.Last.Seconds <= 0 {
		t.Fatalf("report drills %+v, want one passed drill with its restore time", dr)
	} else {
		t.Logf("report: last drill's restore time %.2fs", dr.Last.Seconds)
	}

	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`cluster: main
tiers:
  - {name: daily, type: full, schedule: "0 3 1 1 *", keep_count: 3}
drill:
  schedule: "0 4 1 1 *"
  tier: daily
  timeout: 5m
  checks:
    - {name: one-is-two, database: postgres, sql: "select 1", expect: "2"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.ctl("policy", "apply", "-f", policy); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	out, err = l.ctl("drill", "run", "--cluster", "main", "--wait", "--json")
	if err == nil || !strings.Contains(err.Error(), "one-is-two") {
		t.Fatalf("a drill with a wrong expectation: %v\n%s", err, out)
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Drill.Result != "failed" || !strings.Contains(res.Drill.Reason, `check "one-is-two": got "1", want "2"`) ||
		res.Drill.ChecksFailed != 1 {
		t.Fatalf("failed drill: %v %+v", err, res.Drill)
	}
	testutil.WaitFor(t, 60*time.Second, "drill-failed notified", func() (bool, error) {
		for _, n := range sink.find("drill-failed") {
			if n.Cluster == "main" && n.Details["run"] == res.Drill.ID && strings.Contains(n.Details["reason"], "one-is-two") {
				return true, nil
			}
		}
		return false, fmt.Errorf("received %v", sink.kinds())
	})
}
