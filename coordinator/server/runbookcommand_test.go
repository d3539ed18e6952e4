package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/runcmd"
	"github.com/pgdr/pgdr/coordinator/runbook"
	agentconfig "github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRunbookCommandAgentRestart: the agent restarts while a runbook
// command runs (the restart kills it, and the new process forgot the
// key). The leader's repeats only ask (report_only): the command is not
// run a second time, and the step fails Applied (it may have done part of
// its work). A new leader's asking again (Reissue) never starts it either.
func TestRunbookCommandAgentRestart(t *testing.T) {
	s := testLeader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "a", Cluster: "main", Region: "r1", Dsn: "host=a"}}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0}, "test"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := filepath.Join(dir, "cmd.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho run >>"+count+"\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	acfg := &agentconfig.Config{Cluster: "main", Node: agentconfig.Node{Name: "a"}, Commands: map[string]agentconfig.Command{
		"long": {Argv: []string{script}, Timeout: agentconfig.Duration{Duration: time.Minute}},
	}}
	log := slog.New(slog.DiscardHandler)
	var mu sync.Mutex
	agentCtx, agentStop := context.WithCancel(context.Background())
	defer func() { agentStop() }()
	agent := runcmd.New(acfg, log)
	answered := 0
	f := &fakeAgents{answer: func(node string, c *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
		mu.Lock()
		defer mu.Unlock()
		res := agent.Order(agentCtx, time.Now(), c)
		if answered++; answered == 1 {
			// The agent restarts after its first answer: the run is
			// killed with it, and the new process knows no key.
			agentStop()
			agentCtx, agentStop = context.WithCancel(context.Background())
			agent = runcmd.New(acfg, log)
		}
		return res
	}}
	f.start(t, s, "a")
	r := newRunbookRunner(s, log)
	run := &pgdrv1.RunbookRun{Id: "RB-1", Cluster: "main"}
	d := runbook.Decision{Kind: runbook.KindStart, Step: "s", Key: "RB-1/s",
		Body: runbook.Body{Action: runbook.ActionCommand, Node: "a", Run: "long", Check: runbook.Check{Timeout: "30s"}}}
	o := r.command(ctx, run, d)
	if o.OK || !o.Applied || !strings.Contains(o.Message, "not started now") {
		t.Errorf("outcome: %+v, want failed, applied, not started again", o)
	}
	d.Reissue = true // a new leader asks again
	if o := r.command(ctx, run, d); o.OK || !o.Applied || !strings.Contains(o.Message, "not started now") {
		t.Errorf("outcome of a new leader's asking: %+v", o)
	}
	if b, _ := os.ReadFile(count); strings.Count(string(b), "run") > 1 {
		t.Fatalf("the command ran %d times for one key, want at most once", strings.Count(string(b), "run"))
	}
}

// TestRunbookCommandStepTimeout: a step's timeout shorter than the
// command's own (the agent's config) bounds the run on the agent: the
// leader's outcome is the agent's end of the run (killed), not a give-up
// while the command still runs there (its rollback then ran beside it).
func TestRunbookCommandStepTimeout(t *testing.T) {
	s := testLeader(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "a", Cluster: "main", Region: "r1", Dsn: "host=a"}}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0}, "test"); err != nil {
		t.Fatal(err)
	}
	acfg := &agentconfig.Config{Cluster: "main", Node: agentconfig.Node{Name: "a"}, Commands: map[string]agentconfig.Command{
		"hangs": {Argv: []string{"/bin/sleep", "60"}, Timeout: agentconfig.Duration{Duration: time.Hour}},
	}}
	log := slog.New(slog.DiscardHandler)
	agentCtx, agentStop := context.WithCancel(context.Background())
	defer agentStop()
	agent := runcmd.New(acfg, log)
	f := &fakeAgents{answer: func(node string, c *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
		return agent.Order(agentCtx, time.Now(), c)
	}}
	f.start(t, s, "a")
	r := newRunbookRunner(s, log)
	d := runbook.Decision{Kind: runbook.KindStart, Step: "s", Key: "RB-1/s",
		Body: runbook.Body{Action: runbook.ActionCommand, Node: "a", Run: "hangs", Check: runbook.Check{Timeout: "2s"}}}
	o := r.command(ctx, &pgdrv1.RunbookRun{Id: "RB-1", Cluster: "main"}, d)
	if o.OK || !o.Applied || !strings.Contains(o.Message, "timed out after") || !strings.Contains(o.Message, "was killed") {
		t.Errorf("outcome: %+v, want the agent's kill at the step's timeout", o)
	}
}
