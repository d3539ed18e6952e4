package watchdog

import (
	"context"
	"encoding/json"
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
)

// The parent's side: the daemon runs the child, writes it heartbeats and
// relieves the previous daemon's child (see the package documentation).

// maxGrace bounds grace_ms (see the package documentation).
const maxGrace = 250 * time.Millisecond

// Config is what the watchdog's parent side takes from the agent's
// configuration, with the defaults already applied.
type Config struct {
	// Enabled is failover.watchdog (default true).
	Enabled bool
	// SafetyMargin is failover.safety_margin: the grace is a quarter of
	// it, at most 250ms.
	SafetyMargin time.Duration
	// PIDPath keeps the child's pid (agent.socket + ".watchdog.pid"), so
	// that a restarted daemon finds the previous daemon's watchdog.
	PIDPath string
}

// Lease is the primary lease as the watchdog reads it (agent/lease's
// Holder). Both methods take the lease's own lock.
type Lease interface {
	// Enabled reports whether the agent keeps a lease at all
	// (coordinator.addresses): without one there is nothing to guard and
	// no watchdog runs.
	Enabled() bool
	// Granted reports whether a renewal was granted to this node since it
	// became primary.
	Granted() bool
}

// Deps is what the watchdog's parent side needs from the rest of the
// agent.
type Deps struct {
	// Lease is the primary lease; nil: none (no coordinators).
	Lease Lease
	// Epoch is the highest epoch this agent has seen (for the marker).
	Epoch func() uint64
	// Reported reports whether the agent has a health report yet (the
	// lease loop's verdict is then known).
	Reported func() bool
	// Clocks reads the clocks give-up times are judged on; nil:
	// ReadClocks (tests replace it with clocks that jump).
	Clocks func() Clocks
	Log    *slog.Logger
}

// Watchdog is the daemon's side of the process watchdog (Run) and the
// heartbeat it writes: the lease loop's fencing deadline (Beat), held no
// later than a guarded promotion's give-up time (Guard).
type Watchdog struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	// mu guards the heartbeat's inputs and the child's bookkeeping.
	mu       sync.Mutex
	argv     []string      // the watchdog command; nil: no watchdog
	notify   chan struct{} // a new deadline to send
	deadline time.Time     // zero: nothing to guard
	granted  bool          // the lease was granted when deadline was set
	known    bool          // the lease loop decided on a health report
	orphan   int           // a previous daemon's watchdog still running
	// pendingUntil: a guarded promotion's give-up time (guard.go; zero:
	// none). The heartbeat's deadline is never later while it is set.
	pendingUntil GiveUpTime
	pendingSeq   uint64 // guards begun
	pendingSent  uint64 // the pendingSeq the last heartbeat written carried
}

// New builds the watchdog's parent side, off until Enable.
func New(cfg Config, deps Deps) *Watchdog {
	w := &Watchdog{cfg: cfg, deps: deps, log: deps.Log}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w
}

// Enable makes Run start argv (`pgdr-agent watchdog --config F`,
// with the agent's executable) as the watchdog when failover.watchdog is
// on and coordinators are configured.
func (w *Watchdog) Enable(argv []string) {
	w.mu.Lock()
	w.argv = append([]string(nil), argv...)
	w.notify = make(chan struct{}, 1)
	w.mu.Unlock()
}

// Enabled: failover.watchdog (default true) with a lease to guard and a
// command to run. Only then does the registration promise to honour a
// promotion's settle deadline (honours_settle_by).
func (w *Watchdog) Enabled() bool {
	w.mu.Lock()
	argv := w.argv
	w.mu.Unlock()
	return w.deps.Lease != nil && w.deps.Lease.Enabled() && len(argv) > 0 && w.cfg.Enabled
}

// readClocks is Deps.Clocks, or ReadClocks.
func (w *Watchdog) readClocks() Clocks {
	if w.deps.Clocks != nil {
		return w.deps.Clocks()
	}
	return ReadClocks()
}

// Beat records the lease loop's verdict: the fencing deadline of a
// (maybe) writable primary, or zero when there is nothing to guard.
func (w *Watchdog) Beat(deadline time.Time) {
	known := w.deps.Reported != nil && w.deps.Reported()
	granted := false
	if !deadline.IsZero() {
		granted = w.deps.Lease != nil && w.deps.Lease.Granted()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.notify == nil {
		return
	}
	w.deadline, w.granted, w.known = deadline, granted, known
	w.pokeLocked()
}

// pokeLocked asks Run to write a heartbeat (w.mu held).
func (w *Watchdog) pokeLocked() {
	if w.notify == nil {
		return
	}
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Heartbeat builds the heartbeat for the current deadline now;
// handover says whether a previous watchdog may stand down once this one
// got it.
func (w *Watchdog) Heartbeat() (hb Heartbeat, handover bool) {
	hb, handover, _ = w.heartbeatSeq()
	return hb, handover
}

// heartbeatSeq is Heartbeat, and the guard (pendingSeq) the heartbeat
// carries.
func (w *Watchdog) heartbeatSeq() (hb Heartbeat, handover bool, seq uint64) {
	c := w.readClocks()
	w.mu.Lock()
	deadline, granted, known := w.deadline, w.granted, w.known
	if p := w.pendingUntil; !p.IsZero() {
		// A guarded promotion: fenced at its give-up time at the latest,
		// whatever the lease loop says (a replica's heartbeat says 0), on
		// whichever clock reaches it first. The new watchdog holds the
		// same deadline, so a previous one may stand down.
		if pd := c.Now.Add(p.Left(c)); deadline.IsZero() || pd.Before(deadline) {
			deadline = pd
		}
		if !p.wall.IsZero() {
			hb.GiveUpWallNs = p.wall.UnixNano()
		}
		hb.GiveUpBootNs = p.boot
		granted, seq = true, w.pendingSeq
	}
	w.mu.Unlock()
	if w.deps.Epoch != nil {
		hb.Epoch = w.deps.Epoch()
	}
	if deadline.IsZero() {
		return Heartbeat{Epoch: hb.Epoch}, known, seq
	}
	// mono_ns first, remaining after: the child's deadline is then never
	// later than ours (see the proof in the package documentation).
	if mono, ok := MonoNow(); ok {
		hb.MonoNs = mono
	}
	hb.RemainingMs = time.Until(deadline).Milliseconds()
	if hb.RemainingMs <= 0 {
		hb.RemainingMs = -1
	}
	hb.GraceMs = min(w.cfg.SafetyMargin/4, maxGrace).Milliseconds()
	return hb, granted, seq
}

// Run runs the watchdog process and restarts it when it ends, until ctx
// ends (the child then keeps guarding on its own, see the package
// documentation).
func (w *Watchdog) Run(ctx context.Context) {
	log := w.log.With("component", "watchdog")
	w.findOrphan(log)
	for ctx.Err() == nil {
		err := w.runChild(ctx, log)
		if ctx.Err() != nil {
			return
		}
		log.Error("the watchdog process ended; starting it again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// findOrphan notes a previous daemon's watchdog that still runs (it
// stands down once this daemon's watchdog guards the primary).
func (w *Watchdog) findOrphan(log *slog.Logger) {
	b, err := os.ReadFile(w.cfg.PIDPath)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "\x00watchdog\x00") {
		return // gone, or the pid now names another process
	}
	log.Info("a previous agent's watchdog still runs; it stands down once this agent's watchdog guards the primary", "watchdog_pid", pid)
	w.mu.Lock()
	w.orphan = pid
	w.mu.Unlock()
}

func (w *Watchdog) runChild(ctx context.Context, log *slog.Logger) error {
	w.mu.Lock()
	argv, notify := w.argv, w.notify
	w.mu.Unlock()
	r, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stderr, os.Stderr
	// Its own process group, and no Pdeathsig: it outlives this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		pw.Close()
		return fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	pid := cmd.Process.Pid
	log.Info("watchdog process started", "watchdog_pid", pid)
	if err := os.WriteFile(w.cfg.PIDPath, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		log.Warn("writing the watchdog's pid file", "path", w.cfg.PIDPath, "err", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer pw.Close() // EOF for the child: it keeps guarding if it must
	for {
		hb, handover, seq := w.heartbeatSeq()
		line, _ := json.Marshal(hb)
		pw.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := pw.Write(append(line, '\n')); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				log.Warn("the watchdog does not read its heartbeats", "watchdog_pid", pid)
			} else {
				log.Warn("writing a heartbeat to the watchdog", "watchdog_pid", pid, "err", err)
			}
		} else {
			w.sent(seq)
			if handover {
				w.standDownOrphan(pid, log)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-exited:
			if err == nil {
				err = errors.New("exited")
			}
			return err
		case <-notify:
		}
	}
}

func (w *Watchdog) standDownOrphan(self int, log *slog.Logger) {
	w.mu.Lock()
	pid := w.orphan
	w.orphan = 0
	w.mu.Unlock()
	if pid == 0 || pid == self {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("telling the previous agent's watchdog to stand down", "watchdog_pid", pid, "err", err)
		return
	}
	log.Info("the previous agent's watchdog stands down: this agent's watchdog guards the primary", "watchdog_pid", pid)
}

// ---- the guard's hold on the heartbeat (guard.go) ----------------------

// sent records that a heartbeat carrying the guard seq was written to the
// child (0: it carried none).
func (w *Watchdog) sent(seq uint64) {
	if seq == 0 {
		return
	}
	w.mu.Lock()
	w.pendingSent = max(w.pendingSent, seq)
	w.mu.Unlock()
}

// taken reports whether a heartbeat carrying the guard seq (or a later
// one) was written to the child.
func (w *Watchdog) taken(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pendingSent >= seq
}

// held is the guard's give-up time the heartbeat carries (zero: none).
func (w *Watchdog) held() GiveUpTime {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pendingUntil
}

// hold makes the heartbeat carry a new guard until g; seq numbers the
// guard (taken).
func (w *Watchdog) hold(g GiveUpTime) (seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pendingUntil = g
	w.pendingSeq++
	return w.pendingSeq
}

// poke asks Run to write a heartbeat.
func (w *Watchdog) poke() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pokeLocked()
}

// setHeld makes the heartbeat carry g (zero: no guard); poke asks for a
// heartbeat at once.
func (w *Watchdog) setHeld(g GiveUpTime, poke bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pendingUntil = g
	if poke {
		w.pokeLocked()
	}
}
