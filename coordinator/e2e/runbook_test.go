package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// runbookRun runs `pgdrctl runbook run ... --yes --wait --json` and
// returns the run as it ended (err: it did not end done).
func (l *lab) runbookRun(t *testing.T, args ...string) (ctl.RunbookRunJSON, error) {
	t.Helper()
	out, err := l.ctl(append([]string{"runbook", "run", "--cluster", "main", "--yes", "--wait", "--json"}, args...)...)
	var v ctl.RunbookRunJSON
	if jerr := json.Unmarshal(out, &v); jerr != nil {
		t.Fatalf("runbook run %v: %v (output not a run: %v)\n%s", args, err, jerr, out)
	}
	return v, err
}

// runbookStarts counts, per step, the times history says the run sent or
// began it ("start STEP" decisions).
func runbookStarts(h []ctl.EventJSON, run string) map[string]int {
	out := map[string]int{}
	for _, ev := range h {
		if ev.Kind != "runbook" || ev.Details["run"] != run {
			continue
		}
		if _, rest, ok := strings.Cut(ev.Message, ": start "); ok {
			step, _, _ := strings.Cut(rest, " ")
			step, _, _ = strings.Cut(step, ":")
			out[step]++
		}
	}
	return out
}

// acknowledgedRowsOn checks that every acknowledged id is on node.
func (l *lab) acknowledgedRowsOn(t *testing.T, node string, acked []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres", l.pgPort(node)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	have := map[int]bool{}
	rows, err := c.Query(ctx, "SELECT id FROM acked")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var lost []int
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged rows missing on %s: %v", len(lost), len(acked), node, lost)
	}
	t.Logf("all %d acknowledged rows are on %s", len(acked), node)
}

// TestRunbookRegionalEvacuation: bad runbooks (unknown step, cycle,
// missing target region, malformed YAML) are refused with the field
// named and nothing is stored or run; a dry run prints the plan and
// changes nothing; regional-evacuation moves the primary out of
// us-east-1 (to pg-b1, eu-west-1) and keeps it out (failover paused),
// regional-failback brings it back and resumes failover, and a writer
// running throughout finds every acknowledged row on the final primary.
func TestRunbookRegionalEvacuation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	epoch := l.wantPrimary(t, "pg-a1")
	testutil.WaitFor(t, 60*time.Second, "runbooks available", func() (bool, error) {
		out, err := l.ctl("runbook", "list")
		return err == nil && strings.Contains(string(out), "regional-evacuation"), fmt.Errorf("%v: %s", err, out)
	})

	dir := pgtest.OwnedDir(t, "pgdr-runbooks-")
	for name, c := range map[string]struct{ yaml, want string }{
		"unknown-step": {"name: bad1\nsteps:\n  - {id: a, action: reboot}\n", "steps[0].action: unknown action"},
		"cycle":        {"name: bad2\nsteps:\n  - {id: a, action: pause, after: [b]}\n  - {id: b, action: resume, after: [a]}\n", "steps[0].after: cycle a -> b -> a"},
		"no-region":    {"name: bad3\nsteps:\n  - {id: a, action: switchover, to_region: \"\"}\n", "steps[0]: switchover needs to_node, to_region or away_from_region"},
		"malformed":    {"name: bad4\nsteps: [\n", "invalid YAML: yaml: line 2"},
	} {
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := l.ctl("runbook", "apply", "-f", p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("runbook apply %s: %v, output %q; want a refusal naming %q", name, err, out, c.want)
		}
	}
	out, err := l.ctl("runbook", "run", "regional-evacuation", "--cluster", "main", "--yes")
	if err == nil || !strings.Contains(err.Error(), "params: region required") {
		t.Errorf("run without the region parameter: %v %s", err, out)
	}
	out, err = l.ctl("runbook", "run", "regional-evacuation", "--cluster", "main", "--param", "region=mars", "--yes")
	if err == nil {
		t.Errorf("evacuating a region with no member ran: %s", out)
	}
	if out, err := l.ctl("runbook", "list", "--json"); err != nil || strings.Contains(string(out), "bad") {
		t.Errorf("runbook list after refusals: %v %s", err, out)
	}

	// Dry run: the plan, and nothing changes.
	before := len(l.history(t))
	out, err = l.ctl("runbook", "run", "regional-evacuation", "--cluster", "main", "--param", "region=us-east-1", "--dry-run")
	if err != nil || !strings.Contains(string(out), "pg-b1") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	t.Logf("dry run:\n%s", out)
	if after := len(l.history(t)); after != before {
		t.Errorf("the dry run changed history: %d events before, %d after", before, after)
	}
	if runs, _ := l.ctl("runbook", "runs", "--json"); !strings.Contains(string(runs), `"runs": []`) {
		t.Errorf("the dry run left a run: %s", runs)
	}

	w := startSwitchoverWriter(t, l, "pg-a1", "pg-a2", "pg-b1")
	testutil.WaitFor(t, 30*time.Second, "the writer writes", func() (bool, error) { return w.count("pg-a1") > 20, nil })

	run, err := l.runbookRun(t, "regional-evacuation", "--param", "region=us-east-1")
	if err != nil {
		t.Fatalf("regional-evacuation: %v: %+v", err, run)
	}
	c, err := l.clusterNow()
	if err != nil {
		t.Fatal(err)
	}
	if c.Primary != "pg-b1" || !c.Paused || c.Epoch <= epoch {
		t.Fatalf("after evacuating us-east-1: primary %s paused %v epoch %d; want pg-b1, paused", c.Primary, c.Paused, c.Epoch)
	}
	for _, s := range run.Steps {
		if s.Status != "done" {
			t.Errorf("step %s: %s (%s)", s.ID, s.Status, s.Reason)
		}
	}
	testutil.WaitFor(t, 60*time.Second, "writes on pg-b1", func() (bool, error) { return w.count("pg-b1") > 20, nil })
	l.waitHealthyReplica(t, "pg-a1", 120*time.Second)
	l.waitHealthyReplica(t, "pg-a2", 120*time.Second)

	back, err := l.runbookRun(t, "regional-failback", "--param", "region=us-east-1")
	if err != nil {
		t.Fatalf("regional-failback: %v: %+v", err, back)
	}
	c, err = l.clusterNow()
	if err != nil {
		t.Fatal(err)
	}
	if (c.Primary != "pg-a1" && c.Primary != "pg-a2") || c.Paused {
		t.Fatalf("after failback: primary %s paused %v; want a us-east-1 node, resumed", c.Primary, c.Paused)
	}
	final := c.Primary
	testutil.WaitFor(t, 60*time.Second, "writes on "+final, func() (bool, error) { return w.count(final) > 20, nil })
	acked := w.finish()
	l.acknowledgedRowsOn(t, final, acked)

	h := l.history(t)
	for _, id := range []string{run.ID, back.ID} {
		for step, n := range runbookStarts(h, id) {
			if n != 1 {
				t.Errorf("run %s: step %s started %d times", id, step, n)
			}
		}
	}
}

// TestRunbookLeaderKillAndRollback: a runbook waits for a healthy replica
// in eu-west-1 (pg-b1's agent is stopped); the coordinator leader is
// killed -9 during the wait; the new leader resumes the run when pg-b1 is
// back: every step runs once, none is skipped, each notify reaches the
// webhook once. Then a runbook whose switchover's validation fails rolls
// back the completed steps in reverse order: the switchover back to the
// previous primary, then the resume of the pause.
func TestRunbookLeaderKillAndRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	hook := &webhookSink{secret: []byte("runbook-webhook-secret")}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	dir := pgtest.OwnedDir(t, "pgdr-runbooks-")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("PGDR_LAB_INCIDENTS_FILE", write("incidents.yaml", fmt.Sprintf(`incidents:
  channels:
    - {name: hook, type: webhook, url: "%s/pgdr", secret_file: %s}
`, srv.URL, write("hook.secret", string(hook.secret)))))
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	testutil.WaitFor(t, 60*time.Second, "runbooks available", func() (bool, error) {
		out, err := l.ctl("runbook", "list")
		return err == nil, fmt.Errorf("%v: %s", err, out)
	})
	p := write("move.yaml", `name: move-to-eu
description: wait for eu-west-1, then move the primary there
steps:
  - {id: hello, action: notify, message: "moving to eu-west-1"}
  - {id: hold, action: pause, message: "moving", rollback: {action: resume}}
  - {id: eu-ready, action: wait, condition: healthy_replicas, region: eu-west-1, timeout: 5m}
  - id: move
    action: switchover
    to_region: eu-west-1
    validate: {condition: primary_in_region, region: eu-west-1, timeout: 1m}
    rollback: {action: switchover, to_previous: true}
  - {id: bye, action: notify, message: "moved to eu-west-1"}
`)
	if out, err := l.ctl("runbook", "apply", "-f", p); err != nil {
		t.Fatalf("runbook apply: %v\n%s", err, out)
	}

	l.stopAgentUntilUnhealthy(t, "pg-b1")
	out, err := l.ctl("runbook", "run", "move-to-eu", "--cluster", "main", "--yes", "--json")
	if err != nil {
		t.Fatalf("runbook run: %v\n%s", err, out)
	}
	var started ctl.RunbookRunJSON
	if err := json.Unmarshal(out, &started); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	id := started.ID
	status := func() ctl.RunbookRunJSON {
		out, err := l.ctl("runbook", "status", id, "--json")
		if err != nil {
			return ctl.RunbookRunJSON{Result: "unknown: " + err.Error()}
		}
		var v ctl.RunbookRunJSON
		_ = json.Unmarshal(out, &v)
		return v
	}
	testutil.WaitFor(t, 60*time.Second, "the run waits for eu-west-1", func() (bool, error) {
		v := status()
		return len(v.Steps) == 5 && v.Steps[2].Status == "running", fmt.Errorf("%+v", v)
	})
	if out, err := l.ctl("runbook", "run", "move-to-eu", "--cluster", "main", "--yes"); err == nil {
		t.Errorf("a second run of the cluster started: %s", out)
	}

	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(readPid(t, filepath.Join(l.dir, leader, "coordinator.pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("coordinator leader %s killed -9 while the run waits", leader)
	testutil.WaitFor(t, 60*time.Second, "another coordinator leads", func() (bool, error) {
		n, err := l.leaderName()
		return err == nil && n != leader, fmt.Errorf("leader %q: %v", n, err)
	})
	l.startAgent(t, "pg-b1")
	testutil.WaitFor(t, 3*time.Minute, "the run ends", func() (bool, error) {
		v := status()
		return v.Result != "running" && !strings.HasPrefix(v.Result, "unknown"), fmt.Errorf("%+v", v)
	})
	v := status()
	if v.Result != "done" {
		t.Fatalf("run %s ended %s: %s (%+v)", id, v.Result, v.Reason, v.Steps)
	}
	c, err := l.clusterNow()
	if err != nil {
		t.Fatal(err)
	}
	if c.Primary != "pg-b1" || !c.Paused {
		t.Fatalf("after the run: primary %s paused %v, want pg-b1 and paused", c.Primary, c.Paused)
	}
	starts := runbookStarts(l.history(t), id)
	for _, step := range []string{"hello", "hold", "eu-ready", "move", "bye"} {
		if starts[step] != 1 {
			t.Errorf("step %s started %d times, want once (all: %v)", step, starts[step], starts)
		}
	}
	notes := hook.incidentNotes(id)
	if notes[id+"/hello"] != 1 || notes[id+"/bye"] != 1 || len(notes) != 2 {
		t.Errorf("notify deliveries %v, want %s/hello and %s/bye once each", notes, id, id)
	}

	// Validation fails: eu-west-1 has one member, never two healthy
	// replicas; the rollbacks run in reverse (the switchover back to pg-b1
	// waits for it to rejoin).
	if out, err := l.ctl("resume", "--cluster", "main"); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	l.waitHealthyReplica(t, "pg-a2", 120*time.Second)
	p = write("bad-move.yaml", `name: bad-move
steps:
  - {id: hold, action: pause, message: "trying", rollback: {action: resume}}
  - {id: ready, action: wait, condition: healthy_replicas, region: us-east-1, count: 2, timeout: 3m}
  - id: move
    action: switchover
    to_node: pg-a2
    validate: {condition: healthy_replicas, region: eu-west-1, count: 2, timeout: 5s}
    rollback: {action: switchover, to_previous: true}
  - {id: never, action: notify, message: "must not be sent"}
`)
	if out, err := l.ctl("runbook", "apply", "-f", p); err != nil {
		t.Fatalf("runbook apply: %v\n%s", err, out)
	}
	rb, err := l.runbookRun(t, "bad-move")
	if err == nil || rb.Result != "rolled_back" {
		t.Fatalf("bad-move: %v, result %s (%s); want rolled_back", err, rb.Result, rb.Reason)
	}
	c, err = l.clusterNow()
	if err != nil {
		t.Fatal(err)
	}
	if c.Primary != "pg-b1" || c.Paused {
		t.Errorf("after the rollback: primary %s paused %v; want pg-b1 back and failover resumed", c.Primary, c.Paused)
	}
	// The order of the rollbacks, from history.
	var order []string
	for _, ev := range l.history(t) {
		if ev.Kind == "runbook" && ev.Details["run"] == rb.ID && strings.Contains(ev.Message, ": rollback ") {
			_, rest, _ := strings.Cut(ev.Message, ": rollback ")
			step, _, _ := strings.Cut(rest, " ")
			order = append(order, step)
		}
	}
	if strings.Join(order, ",") != "move,hold" {
		t.Errorf("rollbacks sent in order %v, want move then hold", order)
	}
	if n := hook.incidentNotes(rb.ID); len(n) != 0 {
		t.Errorf("a step after the failed one ran: %v", n)
	}
}

// TestRunbookBackupAndDrillSteps: a runbook's command step has pg-a2's
// agent run the command its config lists under that name (once); its
// backup step runs a backup of the tier through the scheduler and ends
// with it; its drill step orders a restore drill and ends with it; both
// are recorded as the runbook's.
func TestRunbookBackupAndDrillSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	l.wantPrimary(t, "pg-a1")
	for _, n := range []string{"pg-a2", "pg-b1"} {
		l.waitHealthyReplica(t, n, 60*time.Second)
	}
	dir := pgtest.OwnedDir(t, "pgdr-runbooks-")
	// pg-a2's agent lists one command runbooks may run.
	marker := filepath.Join(dir, "marker")
	l.editAgentYAML(t, "pg-a2", func(y string) string {
		return y + "\ncommands:\n  mark:\n    argv: [/bin/sh, -c, 'echo \"$PGDR_NODE $PGDR_RUNBOOK_KEY\" >>" + marker + "']\n    timeout: 30s\n"
	})
	l.restartAgent(t, "pg-a2")
	l.waitHealthyReplica(t, "pg-a2", 60*time.Second)
	p := filepath.Join(dir, "prove.yaml")
	if err := os.WriteFile(p, []byte(`name: prove-backups
steps:
  - {id: mark, action: command, node: pg-a2, run: mark}
  - {id: take, action: backup, tier: daily, timeout: 5m}
  - {id: settle, action: wait, condition: healthy_replicas, count: 2, timeout: 2m}
  - {id: restore, action: drill, timeout: 10m}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "runbook applied", func() (bool, error) {
		out, err := l.ctl("runbook", "apply", "-f", p)
		return err == nil, fmt.Errorf("%v: %s", err, out)
	})
	run, err := l.runbookRun(t, "prove-backups")
	if err != nil {
		t.Fatalf("prove-backups: %v: %+v", err, run)
	}
	out, err := l.ctl("backups", "--cluster", "main", "--json")
	if err != nil || !strings.Contains(string(out), "runbook prove-backups (run "+run.ID+")") {
		t.Errorf("backups: %v; no run requested by the runbook:\n%s", err, out)
	}
	out, err = l.ctl("drills", "--cluster", "main", "--json")
	if err != nil || !strings.Contains(string(out), "runbook prove-backups (run "+run.ID+")") || !strings.Contains(string(out), `"result": "ok"`) {
		t.Errorf("drills: %v; no passed drill requested by the runbook:\n%s", err, out)
	}
	for _, s := range run.Steps {
		if s.Status != "done" {
			t.Errorf("step %s: %s (%s)", s.ID, s.Status, s.Reason)
		}
	}
	if b, err := os.ReadFile(marker); err != nil || strings.TrimSpace(string(b)) != "pg-a2 "+run.ID+"/mark" {
		t.Errorf("the command step's marker: %q (%v), want one line \"pg-a2 %s/mark\"", b, err, run.ID)
	}
}
