package runcmd

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgdr/pgdr/agent/hooks"
	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds.
const (
	// MaxRunning: commands running at once; more are refused.
	MaxRunning = 4
	// MaxKept: runs remembered (the oldest ended ones are forgotten).
	MaxKept = 32
	// MaxKey bounds a key.
	MaxKey = 256
)

type job struct {
	name    string
	started time.Time
	timeout time.Duration
	done    bool
	run     hooks.Run
}

// Runner runs the configured commands. A nil *Runner refuses every order.
type Runner struct {
	cluster, node string
	cmds          map[string]config.Command
	log           *slog.Logger
	exec          func(ctx context.Context, argv, env []string, timeout time.Duration) hooks.Run

	mu   sync.Mutex
	jobs map[string]*job
	keys []string // oldest first
}

// New returns a runner of cfg's commands (nil when it lists none).
func New(cfg *config.Config, log *slog.Logger) *Runner {
	if len(cfg.Commands) == 0 {
		return nil
	}
	return &Runner{cluster: cfg.Cluster, node: cfg.Node.Name, cmds: cfg.Commands, log: log.With("component", "runcmd"),
		exec: hooks.Exec, jobs: map[string]*job{}}
}

// Order answers a RunCommand order received at received (the agent's
// clock): it starts the command (ctx bounds the run: the agent's orders'
// context) the first time a key is seen, and reports on it every time.
func (r *Runner) Order(ctx context.Context, received time.Time, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
	res := &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: cmd.GetCluster(), Node: cmd.GetNode()}
	rc := cmd.GetRunCommand()
	if r == nil {
		res.Error = "this agent lists no commands (commands: in its config): it runs none"
		return res
	}
	name, key := rc.GetName(), rc.GetKey()
	c, ok := r.cmds[name]
	switch {
	case !ok:
		res.Error = fmt.Sprintf("command %q is not one of this agent's commands (%s)", clip(name), r.names())
		return res
	case key == "" || len(key) > MaxKey:
		res.Error = fmt.Sprintf("run_command key: want 1 to %d bytes", MaxKey)
		return res
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobs[key]
	if j == nil && rc.GetReportOnly() {
		// The leader asks again about a run this agent answered for: an
		// agent that restarted since (which killed the run) forgot it,
		// and must not run it a second time.
		res.Error = fmt.Sprintf("no run of key %s on this agent (it restarted since it answered, or forgot the run): not started now", clip(key))
		return res
	}
	if j == nil && cmd.GetSentAt() != nil && cmd.GetDeadline() != nil {
		// An order that waited here past its budget (behind a long one:
		// orders are carried out one at a time) is not started: the
		// leader no longer waits for it, and may have given the step up
		// (its rollback under way).
		if budget := time.Duration(cmd.GetBudgetMs()) * time.Millisecond; !time.Now().Before(received.Add(budget)) {
			res.Error = fmt.Sprintf("command %s not started: the order was received %s ago with a budget of %s to start (the leader no longer waits for it)",
				name, time.Since(received).Round(time.Millisecond), budget)
			return res
		}
	}
	if j == nil {
		running := 0
		for _, x := range r.jobs {
			if !x.done {
				running++
			}
		}
		if running >= MaxRunning {
			res.Error = fmt.Sprintf("%d commands are running, at most %d: try again later", running, MaxRunning)
			return res
		}
		// The step's timeout left, when shorter, bounds the run: the
		// leader stops waiting then and the step's rollback runs.
		timeout := c.Timeout.Duration
		if ms := rc.GetTimeoutMs(); ms > 0 && time.Duration(ms)*time.Millisecond < timeout {
			timeout = time.Duration(ms) * time.Millisecond
		}
		if j = r.start(ctx, key, name, c.Argv, timeout); j == nil {
			res.Error = "could not keep the run: too many runs still running"
			return res
		}
	}
	if j.name != name {
		res.Error = fmt.Sprintf("key %s ran command %q, not %q", clip(key), j.name, clip(name))
		return res
	}
	if !j.done {
		res.Pending = true
		res.Output = fmt.Sprintf("command %s running since %s", name, j.started.UTC().Format(time.RFC3339))
		return res
	}
	res.Output = j.run.Output
	switch j.run.Result {
	case "ok":
		res.Ok = true
	case "failed":
		res.Error = fmt.Sprintf("command %s exited with status %d after %s", name, j.run.ExitCode, j.run.Took)
	case "timeout":
		res.Error = fmt.Sprintf("command %s timed out after %s and was killed", name, j.timeout)
	default:
		res.Error = fmt.Sprintf("command %s could not run: %v", name, j.run.Err)
	}
	return res
}

// start records and starts a run of name under key; r.mu is held. It
// returns nil when nothing ended could be forgotten to make room.
func (r *Runner) start(ctx context.Context, key, name string, argv []string, timeout time.Duration) *job {
	for len(r.keys) >= MaxKept {
		i := slices.IndexFunc(r.keys, func(k string) bool { return r.jobs[k].done })
		if i < 0 {
			return nil
		}
		delete(r.jobs, r.keys[i])
		r.keys = slices.Delete(r.keys, i, i+1)
	}
	j := &job{name: name, started: time.Now(), timeout: timeout}
	r.jobs[key] = j
	r.keys = append(r.keys, key)
	r.log.Info("running a runbook command", "command", name, "key", key, "program", argv[0], "timeout", timeout)
	go func() {
		run := r.exec(ctx, argv, []string{"PGDR_CLUSTER=" + r.cluster, "PGDR_NODE=" + r.node, "PGDR_RUNBOOK_KEY=" + key}, timeout)
		// The answer is a proto string: bytes that are not UTF-8 (a
		// binary output, or one cut inside a character) would make it
		// unsendable, and the session drop at every repeat.
		run.Output = strings.ToValidUTF8(run.Output, "\uFFFD")
		r.log.Info("runbook command ended", "command", name, "key", key, "result", run.Result, "exit_code", run.ExitCode, "took", run.Took)
		r.mu.Lock()
		j.done, j.run = true, run
		r.mu.Unlock()
	}()
	return j
}

func (r *Runner) names() string {
	var ns []string
	for n := range r.cmds {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return fmt.Sprint(ns)
}

func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "…"
	}
	return s
}
