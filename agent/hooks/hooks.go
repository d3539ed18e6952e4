package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/config"
)

// hookOutputLimit caps the output of one hook run kept for the log.
const hookOutputLimit = 16 << 10

// Results of a hook run (pgdr_agent_hook_runs_total{result}).
const (
	hookOK      = "ok"      // exit status 0
	hookFailed  = "failed"  // a non-zero exit status
	hookTimeout = "timeout" // killed at hooks.timeout
	hookError   = "error"   // could not be started
)

// roleChange is one run of the role-change hook.
type roleChange struct {
	role, previous string
	epoch          uint64
}

// Runner runs hooks.on_role_change when the node's role changes.
// Observe is called with every report and never blocks: runs are
// serialized on one goroutine at a time, and while one runs only the latest
// change waits (intermediate roles are coalesced: the hook learns the
// current role and the role the previous run announced).
//
// A nil *Runner (no hook configured) is valid: Observe and Wait do nothing.
type Runner struct {
	argv    []string
	timeout time.Duration
	cluster string
	node    string
	log     *slog.Logger
	runs    *prometheus.CounterVec

	mu        sync.Mutex
	last      string      // the last role observed ("" before the first report)
	announced string      // the role the last started run announced
	pending   *roleChange // the latest change waiting for the running hook
	running   bool
	idle      *sync.Cond // signalled when running turns false
}

// New returns the runner of cfg's hooks.on_role_change, or nil without
// one. It registers pgdr_agent_hook_runs_total{result} with reg (when reg
// is not nil); log gets the runs' results and output.
func New(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) *Runner {
	if len(cfg.Hooks.OnRoleChange) == 0 {
		return nil
	}
	h := &Runner{
		argv:    append([]string(nil), cfg.Hooks.OnRoleChange...),
		timeout: cfg.Hooks.Timeout.Duration,
		cluster: cfg.Cluster, node: cfg.Node.Name,
		log: log.With("hook", "on_role_change"),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_agent_hook_runs_total",
			Help: "Runs of the role-change hook, by result: ok, failed (non-zero exit), timeout, error (not started).",
		}, []string{"result"}),
	}
	if h.timeout <= 0 {
		h.timeout = config.DefaultHookTimeout
	}
	h.idle = sync.NewCond(&h.mu)
	for _, r := range []string{hookOK, hookFailed, hookTimeout, hookError} {
		h.runs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(h.runs)
	}
	return h
}

// Observe notes the role of the latest report. A change from the last
// known role starts the hook (or replaces the waiting change). "unknown"
// (the server runs but cannot be queried this round) is not a role and
// changes nothing. The first report after start counts as a change from
// the empty role, so that a restarted agent re-asserts its node's role.
func (h *Runner) Observe(role string, epoch uint64) {
	if h == nil || role == health.RoleUnknown || role == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if role == h.last {
		return
	}
	h.last = role
	rc := &roleChange{role: role, epoch: epoch}
	if h.running {
		h.pending = rc // coalesce: only the latest waits
		return
	}
	h.running = true
	rc.previous, h.announced = h.announced, role
	go h.loop(rc)
}

// loop runs rc, then every change that arrived meanwhile, one at a time.
func (h *Runner) loop(rc *roleChange) {
	for {
		h.run(rc)
		h.mu.Lock()
		rc, h.pending = h.pending, nil
		if rc == nil || rc.role == h.announced {
			// Nothing waits, or the role went back to what the last run
			// announced: no change to report.
			h.running = false
			h.idle.Broadcast()
			h.mu.Unlock()
			return
		}
		rc.previous, h.announced = h.announced, rc.role
		h.mu.Unlock()
	}
}

// Wait blocks until no hook runs (tests, and a caller that wants the
// runs it started to end before it does).
func (h *Runner) Wait() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.running {
		h.idle.Wait()
	}
}

// run executes the hook once, bounded by the timeout; the whole process
// group is killed at the deadline.
func (h *Runner) run(rc *roleChange) {
	log := h.log.With("role", rc.role, "previous_role", rc.previous, "epoch", rc.epoch)
	log.Info("running role-change hook", "command", h.argv[0])
	r := Exec(context.Background(), h.argv, []string{
		"PGDR_ROLE=" + rc.role,
		"PGDR_PREVIOUS_ROLE=" + rc.previous,
		"PGDR_CLUSTER=" + h.cluster,
		"PGDR_NODE=" + h.node,
		"PGDR_EPOCH=" + strconv.FormatUint(rc.epoch, 10),
	}, h.timeout)
	h.runs.WithLabelValues(r.Result).Inc()
	switch r.Result {
	case hookTimeout:
		log.Error("role-change hook timed out and was killed", "timeout", h.timeout, "output", r.Output)
	case hookOK:
		if r.OutputHeld {
			log.Warn("role-change hook done, but a process it started kept its output open", "took", r.Took, "output", r.Output)
		} else {
			log.Info("role-change hook done", "exit_code", 0, "took", r.Took, "output", r.Output)
		}
	case hookFailed:
		log.Error("role-change hook failed", "exit_code", r.ExitCode, "took", r.Took, "output", r.Output)
	default:
		log.Error("role-change hook could not run", "err", r.Err)
	}
}

// Run is what Exec returned: Result is ok, failed (a non-zero exit
// status), timeout (killed at the deadline) or error (could not start).
type Run struct {
	Result   string
	ExitCode int
	Output   string // stdout and stderr, the first 16 KiB
	Took     time.Duration
	// OutputHeld: it exited 0 but a process it started kept its output
	// open (not waited for).
	OutputHeld bool
	Err        error
}

// Exec runs argv (no shell, no PATH lookup) with env added to this
// process's environment, bounded by timeout (its whole process group is
// killed at the deadline, or when ctx ends), and returns what became of
// it. Role-change hooks and runbook commands run this way.
func Exec(ctx context.Context, argv, env []string, timeout time.Duration) Run {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = nil
	out := &limitedBuffer{max: hookOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A grandchild that keeps the output pipe open does not hold us.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := Run{Took: time.Since(start).Round(time.Millisecond), Output: strings.TrimSpace(out.String()), Err: err}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil && cmd.ProcessState != nil:
		r.Result = hookTimeout
	case err == nil:
		r.Result = hookOK
	case errors.As(err, &exitErr):
		r.Result, r.ExitCode = hookFailed, exitErr.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay):
		r.Result, r.OutputHeld = hookOK, true
	default:
		r.Result = hookError
	}
	return r
}

// limitedBuffer keeps the first max bytes written and counts the rest.
type limitedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int
	dropped int
}

// Write keeps what fits under max and counts the rest; it never fails, so
// a chatty hook is not killed by a broken pipe.
func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	if room >= len(p) {
		b.buf.Write(p)
	} else {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.dropped += len(p) - max(room, 0)
	}
	return len(p), nil
}

// String is what was kept, followed by how many bytes were dropped.
func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("%s… (%d more bytes)", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}
