package runcmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func order(name, key string) *pgdrv1.AgentCommand {
	return &pgdrv1.AgentCommand{Id: "c-" + key, Cluster: "main", Node: "n1", Kind: &pgdrv1.AgentCommand_RunCommand{RunCommand: &pgdrv1.RunCommand{Name: name, Key: key}}}
}

// TestRunCommand: a configured command runs once per key in the
// background (a repeat of the order reports on it: pending, then its
// result and output), failures and timeouts are reported, an unknown
// command or an agent without commands is refused naming why.
func TestRunCommand(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := filepath.Join(dir, "cmd.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho run >>"+count+"\necho \"hello $PGDR_NODE $PGDR_RUNBOOK_KEY\"\nsleep \"${1:-0}\"\nexit \"${2:-0}\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "n1"}, Commands: map[string]config.Command{
		"quick": {Argv: []string{script, "0.3"}, Timeout: config.Duration{Duration: 10 * time.Second}},
		"fails": {Argv: []string{script, "0", "3"}, Timeout: config.Duration{Duration: 10 * time.Second}},
		"hangs": {Argv: []string{script, "30"}, Timeout: config.Duration{Duration: time.Second}},
	}}
	r := New(cfg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	wait := func(name, key string) *pgdrv1.CommandResult {
		t.Helper()
		var res *pgdrv1.CommandResult
		testutil.WaitFor(t, 20*time.Second, name+" ends", func() (bool, error) {
			res = r.Order(ctx, time.Now(), order(name, key))
			return !res.GetPending(), fmt.Errorf("%+v", res)
		})
		return res
	}
	if res := r.Order(ctx, time.Now(), order("quick", "RB-1/step")); !res.GetPending() || res.GetOk() {
		t.Fatalf("first order: %+v, want pending", res)
	}
	res := wait("quick", "RB-1/step")
	if !res.GetOk() || res.GetOutput() != "hello n1 RB-1/step" {
		t.Fatalf("quick: %+v", res)
	}
	if res := r.Order(ctx, time.Now(), order("quick", "RB-1/step")); !res.GetOk() {
		t.Fatalf("a repeat after the end: %+v", res)
	}
	if b, _ := os.ReadFile(count); strings.Count(string(b), "run") != 1 {
		t.Fatalf("the command ran %d times for one key, want once", strings.Count(string(b), "run"))
	}
	if res := wait("fails", "k2"); res.GetOk() || !strings.Contains(res.GetError(), "exited with status 3") {
		t.Errorf("fails: %+v", res)
	}
	if res := wait("hangs", "k3"); res.GetOk() || !strings.Contains(res.GetError(), "timed out") {
		t.Errorf("hangs: %+v", res)
	}
	if res := r.Order(ctx, time.Now(), order("rm-rf", "k4")); res.GetOk() || res.GetPending() || !strings.Contains(res.GetError(), `"rm-rf" is not one of this agent's commands`) {
		t.Errorf("unknown command: %+v", res)
	}
	if res := r.Order(ctx, time.Now(), order("fails", "RB-1/step")); res.GetOk() || !strings.Contains(res.GetError(), `ran command "quick"`) {
		t.Errorf("a key reused for another command: %+v", res)
	}
	var none *Runner
	if res := none.Order(ctx, time.Now(), order("quick", "k")); res.GetOk() || !strings.Contains(res.GetError(), "lists no commands") {
		t.Errorf("no commands: %+v", res)
	}
}

// TestRunCommandBounds: at most MaxRunning run at once, and MaxKept runs
// are remembered, forgetting the oldest ended ones.
func TestRunCommandBounds(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "slow.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "n1"}, Commands: map[string]config.Command{
		"slow": {Argv: []string{script, "2"}, Timeout: config.Duration{Duration: 10 * time.Second}},
		"fast": {Argv: []string{script, "0"}, Timeout: config.Duration{Duration: 10 * time.Second}},
	}}
	r := New(cfg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for i := range MaxRunning {
		if res := r.Order(ctx, time.Now(), order("slow", fmt.Sprint("s", i))); !res.GetPending() {
			t.Fatalf("slow %d: %+v", i, res)
		}
	}
	if res := r.Order(ctx, time.Now(), order("slow", "one-too-many")); res.GetPending() || !strings.Contains(res.GetError(), "at most 4") {
		t.Fatalf("a fifth at once: %+v", res)
	}
	testutil.WaitFor(t, 20*time.Second, "the slow ones end", func() (bool, error) {
		return !r.Order(ctx, time.Now(), order("slow", "s0")).GetPending() && !r.Order(ctx, time.Now(), order("slow", fmt.Sprint("s", MaxRunning-1))).GetPending(), nil
	})
	for i := range MaxKept + 5 {
		key := fmt.Sprint("f", i)
		testutil.WaitFor(t, 20*time.Second, key+" ends", func() (bool, error) { return !r.Order(ctx, time.Now(), order("fast", key)).GetPending(), nil })
	}
	r.mu.Lock()
	n := len(r.jobs)
	r.mu.Unlock()
	if n > MaxKept {
		t.Errorf("%d runs kept, at most %d", n, MaxKept)
	}
}

// TestRunCommandOutputNotUTF8: a command printing bytes that are not
// UTF-8 (or whose output is cut inside a character) is still answered:
// the result must marshal, else the agent's session drops on every poll.
func TestRunCommandOutputNotUTF8(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "bin.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf 'caf\\303\\251 \\377\\376 end'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "n1"}, Commands: map[string]config.Command{
		"bin": {Argv: []string{script}, Timeout: config.Duration{Duration: 10 * time.Second}},
	}}
	r := New(cfg, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	var res *pgdrv1.CommandResult
	testutil.WaitFor(t, 20*time.Second, "bin ends", func() (bool, error) {
		res = r.Order(ctx, time.Now(), order("bin", "k"))
		return !res.GetPending(), nil
	})
	if _, err := proto.Marshal(res); err != nil {
		t.Fatalf("the answer does not marshal: %v (%q)", err, res.GetOutput())
	}
	if !res.GetOk() || !strings.HasPrefix(res.GetOutput(), "café ") || !strings.HasSuffix(res.GetOutput(), " end") {
		t.Fatalf("answer: %+v", res)
	}
}

// TestRunCommandRestart: an agent that restarted (its runs forgotten, the
// running one killed with it) never starts a key again on the leader's
// repeat (report_only): it answers that it has no such run.
func TestRunCommandRestart(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := filepath.Join(dir, "cmd.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho run >>"+count+"\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "n1"}, Commands: map[string]config.Command{
		"long": {Argv: []string{script}, Timeout: config.Duration{Duration: time.Minute}},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	r := New(cfg, slog.New(slog.DiscardHandler))
	if res := r.Order(ctx, time.Now(), order("long", "RB-1/s")); !res.GetPending() {
		t.Fatalf("first order: %+v", res)
	}
	testutil.WaitFor(t, 20*time.Second, "the command starts", func() (bool, error) {
		b, _ := os.ReadFile(count)
		return len(b) > 0, nil
	})
	cancel() // the agent stops: the run is killed
	testutil.WaitFor(t, 20*time.Second, "the run ends", func() (bool, error) {
		return !r.Order(context.Background(), time.Now(), order("long", "RB-1/s")).GetPending(), nil
	})
	r = New(cfg, slog.New(slog.DiscardHandler)) // restarted
	poll := order("long", "RB-1/s")
	poll.GetRunCommand().ReportOnly = true
	res := r.Order(context.Background(), time.Now(), poll)
	if res.GetOk() || res.GetPending() || !strings.Contains(res.GetError(), "not started now") {
		t.Errorf("a repeat after a restart: %+v", res)
	}
	r.mu.Lock()
	n := len(r.jobs)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("the restarted agent started %d run(s) on a report_only repeat", n)
	}
}

// TestRunCommandExpired: an order that waited on the agent (behind a long
// order: they are carried out one at a time) past the budget the leader
// gave it is not started: the leader no longer waits for its answer, and
// may have given the step up and started its rollback.
func TestRunCommandExpired(t *testing.T) {
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "n1"}, Commands: map[string]config.Command{
		"quick": {Argv: []string{"/bin/true"}, Timeout: config.Duration{Duration: 10 * time.Second}},
	}}
	r := New(cfg, slog.New(slog.DiscardHandler))
	now := time.Now()
	o := order("quick", "RB-1/s")
	o.SentAt, o.Deadline, o.BudgetMs = timestamppb.New(now.Add(-31*time.Second)), timestamppb.New(now.Add(-time.Second)), 30_000
	res := r.Order(context.Background(), now.Add(-31*time.Second), o)
	if res.GetOk() || res.GetPending() || !strings.Contains(res.GetError(), "not started") {
		t.Errorf("an expired order: %+v", res)
	}
	r.mu.Lock()
	n := len(r.jobs)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("an expired order started %d run(s)", n)
	}
}

// TestRunCommandStepTimeout: the run is bounded by the step's timeout the
// order carries when it is shorter than the command's own: the leader
// stops waiting then, and the step's rollback must not run beside it.
func TestRunCommandStepTimeout(t *testing.T) {
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "n1"}, Commands: map[string]config.Command{
		"hangs": {Argv: []string{"/bin/sleep", "60"}, Timeout: config.Duration{Duration: time.Hour}},
	}}
	r := New(cfg, slog.New(slog.DiscardHandler))
	o := order("hangs", "RB-1/s")
	o.GetRunCommand().TimeoutMs = 500
	if res := r.Order(context.Background(), time.Now(), o); !res.GetPending() {
		t.Fatalf("first order: %+v", res)
	}
	var res *pgdrv1.CommandResult
	testutil.WaitFor(t, 20*time.Second, "the run is killed at the step's timeout", func() (bool, error) {
		res = r.Order(context.Background(), time.Now(), order("hangs", "RB-1/s"))
		return !res.GetPending(), fmt.Errorf("%+v", res)
	})
	if res.GetOk() || !strings.Contains(res.GetError(), "timed out after 500ms") {
		t.Errorf("answer: %+v", res)
	}
}
