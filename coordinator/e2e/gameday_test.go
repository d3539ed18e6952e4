package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestGameDayRegional: a game day of the policy runs regional-evacuation
// then regional-failback while its probe writes through the cluster's
// endpoint (a multi-host DSN asking for the read-write member); the
// record has both runbook runs done, a measured write unavailability
// between 0 and 30 s for each switchover, the measured RTO, and
// `pgdrctl report --json` shows it. Its window (15m) bounds the wait.
func TestGameDayRegional(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startGameDayLab(t)
	dsn := l.endpointDSN()
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`cluster: main
tiers:
  - {name: daily, type: full, schedule: "0 3 1 1 *", keep_count: 3}
game_days:
  - name: regional
    schedule: "0 5 1 1 *"
    window: 15m
    runbooks:
      - {name: regional-evacuation, params: {region: us-east-1}}
      - {name: regional-failback, params: {region: us-east-1}}
    probe:
      dsn: "`+dsn+`"
      interval: 100ms
`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(mustRead(t, policy)), "interval: 100ms", "interval: 100ms\n      password_file: relative", 1)
	if err := os.WriteFile(policy+".bad", []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.ctl("policy", "apply", "-f", policy+".bad"); err == nil || !strings.Contains(err.Error(), "game_days[0].probe.password_file") {
		t.Fatalf("a bad game day applied: %v\n%s", err, out)
	}
	unknown := strings.Replace(string(mustRead(t, policy)), "name: regional-failback", "name: no-such-runbook", 1)
	if err := os.WriteFile(policy+".unknown", []byte(unknown), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.ctl("policy", "apply", "-f", policy+".unknown"); err == nil || !strings.Contains(err.Error(), `game_days[0].runbooks[1].name: runbook "no-such-runbook" is not known`) {
		t.Fatalf("a game day with an unknown runbook applied: %v\n%s", err, out)
	}
	if out, err := l.ctl("policy", "apply", "-f", policy); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	out, err := l.ctl("gameday", "run", "regional", "--cluster", "main", "--wait", "--json")
	var g ctl.GameDayJSON
	if jerr := json.Unmarshal(out, &g); jerr != nil {
		t.Fatalf("gameday run: %v (output not a game day: %v)\n%s", err, jerr, out)
	}
	t.Logf("game day %s ended %s: %s; RTO %.3fs; measures %+v", g.ID, g.Result, g.Message, g.RTOSeconds, g.Measures)
	if err != nil || g.Result != "ok" || len(g.Runs) != 2 || len(g.Measures) != 2 {
		t.Fatalf("game day: %v: %+v", err, g)
	}
	for _, m := range g.Measures {
		if !m.Measured || m.LongestGapSeconds <= 0 || m.LongestGapSeconds >= 30 || m.WritesOK == 0 {
			t.Errorf("run %s (%s): measure %+v, want a measured write unavailability in (0, 30s)", m.Run, m.Runbook, m)
		}
	}
	if !g.RTOMeasured || g.RTOSeconds <= 0 || g.RTOSeconds >= 30 {
		t.Errorf("measured RTO %v %.3fs", g.RTOMeasured, g.RTOSeconds)
	}
	for _, id := range g.Runs {
		var runs struct {
			Runs []ctl.RunbookRunJSON `json:"runs"`
		}
		rout, err := l.ctl("runbook", "runs", "--json")
		if err != nil || json.Unmarshal(rout, &runs) != nil {
			t.Fatalf("runbook runs: %v\n%s", err, rout)
		}
		found := false
		for _, r := range runs.Runs {
			found = found || (r.ID == id && r.Result == "done")
		}
		if !found {
			t.Errorf("run %s of the game day is not done: %s", id, rout)
		}
	}
	rep, err := l.ctl("report", "--json", "--cluster", "main", "--since", "1h")
	if err != nil {
		t.Fatalf("report: %v\n%s", err, rep)
	}
	var r ctl.ReportJSON
	if err := json.Unmarshal(rep, &r); err != nil || len(r.Clusters) != 1 {
		t.Fatalf("report: %v\n%s", err, rep)
	}
	gds := r.Clusters[0].GameDays
	if len(gds) != 1 || gds[0].ID != g.ID || gds[0].Result != "ok" || gds[0].RTOSeconds != g.RTOSeconds {
		t.Errorf("report game days %+v, want %s", gds, g.ID)
	}
	if text, err := l.ctl("report", "--cluster", "main", "--since", "1h"); err != nil || !strings.Contains(string(text), "### Game days") || !strings.Contains(string(text), g.ID) {
		t.Errorf("report text: %v\n%s", err, text)
	}
}

// startGameDayLab starts the lab with pg-a1 primary and the runbooks
// available.
func startGameDayLab(t *testing.T) *lab {
	t.Helper()
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	testutil.WaitFor(t, 60*time.Second, "runbooks available", func() (bool, error) {
		out, err := l.ctl("runbook", "list")
		return err == nil && strings.Contains(string(out), "regional-evacuation"), fmt.Errorf("%v: %s", err, out)
	})
	return l
}

// endpointDSN is the lab cluster's endpoint for a probe: every member,
// the read-write one chosen.
func (l *lab) endpointDSN() string {
	return fmt.Sprintf("host=127.0.0.1,127.0.0.1,127.0.0.1 port=%d,%d,%d user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2",
		l.pgPort("pg-a1"), l.pgPort("pg-a2"), l.pgPort("pg-b1"))
}

// stopAgentUntilUnhealthy stops node's agent and waits for the leader
// to see the node unhealthy (no reports).
func (l *lab) stopAgentUntilUnhealthy(t *testing.T, node string) {
	t.Helper()
	stopPid(t, filepath.Join(l.dir, node, "agent.pid"))
	testutil.WaitFor(t, 60*time.Second, node+" seen unhealthy (no reports)", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		m, _ := labMember(c, node)
		return !m.Healthy, fmt.Errorf("%s %+v", node, m)
	})
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gameDays returns the cluster main's game days (`pgdrctl gamedays --json`).
func (l *lab) gameDays(t *testing.T) []ctl.GameDayJSON {
	t.Helper()
	out, err := l.ctl("gamedays", "--cluster", "main", "--json")
	if err != nil {
		return nil
	}
	var v struct {
		Clusters []ctl.ClusterGameDaysJSON `json:"clusters"`
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.Clusters) != 1 {
		return nil
	}
	return v.Clusters[0].GameDays
}

// TestGameDayScheduledLeaderKill: a game day starts on its schedule (a
// daily slot a minute or two away); its first runbook waits for a
// healthy replica in eu-west-1 (pg-b1's agent is stopped); the
// coordinator leader is killed -9 during the wait; the new leader
// carries the game day on: the wait ends when pg-b1 is back, the second
// runbook (regional-evacuation) starts once, the game day ends ok with
// the first run's measure partial (its probe was the dead leader's) and
// the evacuation's switchover measured.
func TestGameDayScheduledLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startGameDayLab(t)
	dir := t.TempDir()
	rb := filepath.Join(dir, "wait-eu.yaml")
	if err := os.WriteFile(rb, []byte(`name: wait-eu
steps:
  - {id: eu-ready, action: wait, condition: healthy_replicas, region: eu-west-1, count: 1, timeout: 5m}
  - {id: hello, action: notify, message: "eu-west-1 is ready"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.ctl("runbook", "apply", "-f", rb); err != nil {
		t.Fatalf("runbook apply: %v\n%s", err, out)
	}
	l.stopAgentUntilUnhealthy(t, "pg-b1")
	slot := time.Now().UTC().Add(90 * time.Second).Truncate(time.Minute)
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf(`cluster: main
tiers:
  - {name: daily, type: full, schedule: "0 3 1 1 *", keep_count: 3}
game_days:
  - name: scheduled
    schedule: "%d %d * * *"
    window: 15m
    runbooks:
      - {name: wait-eu}
      - {name: regional-evacuation, params: {region: us-east-1}}
    probe: {dsn: "%s"}
`, slot.Minute(), slot.Hour(), l.endpointDSN())), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.ctl("policy", "apply", "-f", policy); err != nil {
		t.Fatalf("policy apply: %v\n%s", err, out)
	}
	var g ctl.GameDayJSON
	testutil.WaitFor(t, 4*time.Minute, "the game day starts on its slot and waits in its first runbook", func() (bool, error) {
		gds := l.gameDays(t)
		if len(gds) == 1 {
			g = gds[0]
		}
		return len(gds) == 1 && len(gds[0].Runs) == 1, fmt.Errorf("%+v", gds)
	})
	if g.Slot != slot.Format(time.RFC3339) {
		t.Errorf("game day slot %s, want %s", g.Slot, slot.Format(time.RFC3339))
	}
	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(readPid(t, filepath.Join(l.dir, leader, "coordinator.pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("coordinator leader %s killed -9 while game day %s waits in run %s", leader, g.ID, g.Runs[0])
	testutil.WaitFor(t, 60*time.Second, "another coordinator leads", func() (bool, error) {
		n, err := l.leaderName()
		return err == nil && n != leader, fmt.Errorf("leader %q: %v", n, err)
	})
	l.startAgent(t, "pg-b1")
	testutil.WaitFor(t, 8*time.Minute, "the game day ends", func() (bool, error) {
		for _, x := range l.gameDays(t) {
			if x.ID == g.ID {
				g = x
			}
		}
		return g.Result != "running", fmt.Errorf("%+v", g)
	})
	t.Logf("game day %s ended %s: %s; RTO %.3fs; measures %+v", g.ID, g.Result, g.Message, g.RTOSeconds, g.Measures)
	if g.Result != "ok" || len(g.Runs) != 2 || len(g.Measures) != 2 {
		t.Fatalf("game day %+v", g)
	}
	if m := g.Measures[0]; m.Measured {
		t.Errorf("the first run's measure %+v: its probe was the killed leader's, want partial", m)
	}
	if m := g.Measures[1]; !m.Measured || m.LongestGapSeconds <= 0 || m.LongestGapSeconds >= 30 {
		t.Errorf("the evacuation's measure %+v, want a measured write unavailability in (0, 30s)", m)
	}
	started := map[string]int{}
	for _, ev := range l.history(t) {
		if ev.Kind == "runbook" && strings.Contains(ev.Message, "for game day scheduled ("+g.ID+")") {
			started[ev.Details["run"]]++
		}
	}
	if len(started) != 2 || started[g.Runs[0]] != 1 || started[g.Runs[1]] != 1 {
		t.Errorf("runbook runs started for the game day %v, want %v once each", started, g.Runs)
	}
	if gds := l.gameDays(t); len(gds) != 1 {
		t.Errorf("%d game days recorded, want the one slot's", len(gds))
	}
}
