package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestDrillCommands runs drill run and drills against a real coordinator
// whose agents are stand-ins speaking the agent protocol: the read token
// lists but cannot run; drill run --wait on the standby passes and shows
// its timings; a failing drill ends --wait with exit 1 and its reason; a
// second drill while one runs is refused naming it; drills lists them in
// a table and as JSON.
func TestDrillCommands(t *testing.T) {
	c := coordtest.Start(t, coordtest.Options{N: 1, Agents: []string{"pg-a1", "pg-a2"}})
	leader := c.WaitLeader(60 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startFakeAgent(t, ctx, pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-a1")), &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1",
		PostmasterAlive: true, Connectable: true, CurrentLsn: 5000, Timeline: 1})
	replica := startFakeAgent(t, ctx, pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-a2")), &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2",
		PostmasterAlive: true, Connectable: true, InRecovery: true, Streaming: true, ReceiveLsn: 5000, ReplayLsn: 5000, Timeline: 1})
	pgdrctl := func(role string, args ...string) (int, string, string) {
		t.Helper()
		envs := map[string]string{"PGDR_ADDR": leader.APIAddr, "PGDR_CA": filepath.Join(c.CertDir, "ca.crt"), "PGDR_TOKEN": c.Tokens[role]}
		var out, errOut bytes.Buffer
		e := env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return envs[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return run(ctx, e, args), out.String(), errOut.String()
	}
	admin, read := tlsutil.RoleAdmin, tlsutil.RoleRead
	testutil.WaitFor(t, 30*time.Second, "pg-a1 recorded primary, both members healthy", func() (bool, error) {
		_, out, _ := pgdrctl(read, "status", "--json")
		var v StatusJSON
		if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Clusters) != 1 {
			return false, nil
		}
		healthy := 0
		for _, m := range v.Clusters[0].Members {
			if m.Healthy {
				healthy++
			}
		}
		return v.Clusters[0].Primary == "pg-a1" && healthy == 2, nil
	})
	code, out, errOut := pgdrctl(read, "drills")
	if code != ExitOK || !strings.Contains(out, "cluster main: 0 drills") {
		t.Fatalf("drills before any: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = pgdrctl(read, "drill", "run"); code != ExitFailure || !strings.Contains(errOut, "needs role admin") {
		t.Fatalf("drill run with the read token: exit %d, %s", code, errOut)
	}
	if code, _, errOut = pgdrctl(admin, "drill", "run", "--tier", "daily", "--backup", "B1"); code != ExitUsage || !strings.Contains(errOut, "not both") {
		t.Fatalf("tier and backup: exit %d, %s", code, errOut)
	}
	if code, _, errOut = pgdrctl(admin, "drill", "run", "--target-time", "yesterday"); code != ExitUsage || !strings.Contains(errOut, "RFC 3339") {
		t.Fatalf("bad target time: exit %d, %s", code, errOut)
	}

	// A drill section in the policy: shown by policy show, and carried
	// (checks, timeout) by an operator's drill.
	if code, out, errOut := pgdrctl(admin, "policy", "apply", "-f", writeFile(t, `cluster: main
tiers:
  - {name: daily, type: full, schedule: "0 3 1 1 *", keep_count: 3}
drill:
  schedule: "0 4 1 1 *"
  tier: daily
  timeout: 20m
  checks:
    - {name: rows, database: shop, sql: "select count(*) from orders", expect: "3"}
`)); code != ExitOK {
		t.Fatalf("policy apply: exit %d\n%s%s", code, out, errOut)
	}
	if d := showJSON(t, pgdrctl).Backup.Drill; d == nil || d.Schedule != "0 4 1 1 *" || d.Node != "prefer-standby" || d.TimeoutSeconds != 1200 ||
		len(d.Checks) != 1 || d.Checks[0].Expect != "3" || d.NextRun == "" {
		t.Fatalf("policy show --json: drill %+v", d)
	}
	if code, out, _ := pgdrctl(read, "policy", "show", "--cluster", "main"); code != ExitOK || !strings.Contains(out, "drill: 0 4 1 1 * UTC, tier daily, node prefer-standby, target latest, timeout 20m, 1 checks") {
		t.Fatalf("policy show:\n%s", out)
	}
	passed := func(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult {
		if o := cmd.GetDrill(); len(o.GetChecks()) != 1 || o.GetTimeoutMs() != 1_200_000 {
			t.Errorf("the order does not carry the policy's checks and timeout: %v", o)
		}
		id := cmd.GetDrill().GetRunId()
		return []*pgdrv1.CommandResult{
			{Id: cmd.GetId(), Cluster: "main", Node: "pg-a2", Pending: true, Drill: &pgdrv1.DrillReport{RunId: id}},
			{Id: cmd.GetId(), Cluster: "main", Node: "pg-a2", Ok: true, Drill: &pgdrv1.DrillReport{RunId: id, Ok: true, Backup: "20260501T100000F",
				Target: "latest", Timings: &pgdrv1.DrillTimings{FetchWrite: 8.5, Replay: 20, Checks: 10, Total: 40}, RpoSeconds: 3,
				AmcheckRun: true, AmcheckOk: true, ChecksPassed: 2}},
		}
	}
	replica.setAnswer(passed)
	code, out, errOut = pgdrctl(admin, "drill", "run", "--tier", "daily", "--wait", "--json")
	var done DrillRunResultJSON
	if err := json.Unmarshal([]byte(out), &done); code != ExitOK || err != nil {
		t.Fatalf("drill run --wait: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	if d := done.Drill; d.Result != "ok" || d.Node != "pg-a2" || d.Backup != "20260501T100000F" || d.Tier != "daily" || d.Timings == nil ||
		d.Timings.Total != 40 || d.RPOSeconds != 3 || d.AmcheckOK == nil || !*d.AmcheckOK || d.ChecksPassed != 2 || d.Accepted == "" ||
		d.RequestedBy != "admin:admin-token" {
		t.Fatalf("drill passed: %+v", d)
	}

	replica.setAnswer(func(cmd *pgdrv1.AgentCommand) []*pgdrv1.CommandResult {
		id := cmd.GetDrill().GetRunId()
		return []*pgdrv1.CommandResult{{Id: cmd.GetId(), Cluster: "main", Node: "pg-a2", Error: "drill failed: check rows: got 2, want 3",
			Drill: &pgdrv1.DrillReport{RunId: id, Reason: "check rows: got 2, want 3", ChecksFailed: 1, Timings: &pgdrv1.DrillTimings{Total: 5}}}}
	})
	code, out, errOut = pgdrctl(admin, "drill", "run", "--wait")
	if code != ExitFailure || !strings.Contains(errOut, "on pg-a2: failed in 5s") || !strings.Contains(errOut, "check rows: got 2, want 3") {
		t.Fatalf("failing drill: exit %d\n%s%s", code, out, errOut)
	}

	replica.setAnswer(func(*pgdrv1.AgentCommand) []*pgdrv1.CommandResult { return nil })
	code, out, errOut = pgdrctl(admin, "drill", "run", "--node", "pg-a2")
	if code != ExitOK || !strings.Contains(out, "ordered on pg-a2") {
		t.Fatalf("drill run: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = pgdrctl(admin, "drill", "run"); code != ExitFailure || !strings.Contains(errOut, "a restore drill of the cluster is in flight") {
		t.Fatalf("second drill: exit %d, %s", code, errOut)
	}
	code, out, errOut = pgdrctl(read, "drills")
	if code != ExitOK || !strings.Contains(out, "cluster main: 3 drills") || !strings.Contains(out, "FETCH/WRITE") ||
		!strings.Contains(out, "20260501T100000F") || !strings.Contains(out, "running") || !strings.Contains(out, "check rows: got 2, want 3") {
		t.Fatalf("drills: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = pgdrctl(read, "drills", "--json")
	var list DrillsJSON
	if err := json.Unmarshal([]byte(out), &list); code != ExitOK || err != nil || len(list.Clusters) != 1 || len(list.Clusters[0].Drills) != 3 ||
		list.Clusters[0].Drills[1].Result != "failed" || list.Clusters[0].Drills[1].Reason != "check rows: got 2, want 3" {
		t.Fatalf("drills --json: exit %d, %v\n%s", code, err, out)
	}
}
