package daemon

// The process watchdog (failover.watchdog, default true with
// coordinator.addresses): a stalled agent must not let its PostgreSQL
// write past the lease the coordinators granted.
//
// The agent's own fencing deadline lives in the agent process: stopped
// (SIGSTOP), starved (a GC death spiral, swapping) or stuck in a syscall,
// it never fences, and PostgreSQL goes on taking writes after the leader
// considers the lease expired and promotes another node. So the daemon
// runs a child process, `pgdr-agent watchdog --config F`, and writes it a
// heartbeat line on its stdin every time the lease loop evaluates the
// lease (every failover.loop):
//
//	{"remaining_ms": N, "grace_ms": G, "mono_ns": T, "epoch": E}
//
// remaining_ms is the time left until the daemon's current fencing
// deadline D (the lease's, extended by failsafe), rounded down; 0 means
// there is nothing to guard (not a primary: in recovery, stopped, already
// fenced, no report yet); negative means D has passed. mono_ns is
// CLOCK_MONOTONIC read just BEFORE remaining_ms was measured. The child
// sets its own deadline on its own monotonic clock: its receipt time plus
// remaining_ms minus the heartbeat's age (its CLOCK_MONOTONIC at receipt
// minus mono_ns; 0 where that clock cannot be read), plus grace_ms. Wall-
// clock steps change nothing: only intervals on monotonic clocks count.
// The one exception is a guarded promotion's give-up time
// (promoteguard.go), which the heartbeat also carries on the wall clock
// and CLOCK_BOOTTIME (give_up_wall_ns, give_up_boot_ns): the child fences
// when either reaches it plus grace_ms, earlier than its monotonic
// deadline after a VM pause, or a forward step of the wall clock (early:
// the safe direction).
//
// grace_ms, G = min(safety_margin/4, 250ms), lets a running agent fence
// first, at D, with its fast shutdown and its own reason: without it the
// watchdog's deadline would coincide with D, and every ordinary loss of
// the lease would be pre-empted by the watchdog's immediate shutdown and
// marked "agent stalled". The watchdog is the backstop, for an agent that
// did not act at D.
//
// When the child's deadline passes with no newer heartbeat replacing it,
// the child fences PostgreSQL itself (`pg_ctl stop -m immediate`, as the
// data directory's owner when root; SIGQUIT to the postmaster if pg_ctl
// cannot run), writes the pgdr.fenced marker ("watchdog: agent stalled
// ...", keeping a marker the agent already wrote) and exits. The newest
// heartbeat always wins, so a heartbeat saying 0 disarms it (a demoted or
// fenced node).
//
// Why a stalled agent cannot let PostgreSQL write past the coordinators'
// lease expiry. Let D be the daemon's deadline when it builds a heartbeat,
// m0 the instant it reads mono_ns and m1 >= m0 the instant it measures
// remaining = D − m1 (rounded down, so <= D − m1). The child receives it
// at r >= m1 and sets C = r + remaining − (r − m0) + G = m0 + remaining +
// G <= m0 + D − m1 + G <= D + G: the child's deadline is never later than
// the daemon's plus the grace, however long the line sat in the pipe (a
// child that reads a stale heartbeat late fences at once rather than
// late; a heartbeat built after D says so, remaining_ms < 0, and the child
// fences on receipt, without grace). Without the age correction (a
// platform without a shared monotonic clock) C exceeds D + G by the pipe's
// transit time only, microseconds for a child that is running. Lease's
// proof gives D < E − f for the leader's expiry E of the lease, where f,
// the time fencing takes to stop writes, is budgeted out of the safety
// margin M (with T = 5s, M = 1s and clock drift of a few hundred ppm,
// almost a second; failsafe's extension keeps the same bound against each
// member's refusal window, failsafe.go). The watchdog spends G <= M/4 of
// that budget waiting and stops writes with an immediate shutdown, whose
// f_w is a signal to the postmaster, which SIGQUITs every backend at once
// (milliseconds): C + f_w <= D + G + f_w < E whenever G + f_w fits the
// budget, which M/4 + milliseconds does. Later heartbeats only ever carry
// the daemon's then-current D. So whatever happens to the agent after its
// last heartbeat, PostgreSQL stops writing before E: a stalled, crashed or
// killed agent is covered as long as the watchdog process runs. The
// watchdog uses an immediate shutdown (no shutdown checkpoint: crash
// recovery at the next start, which WAL makes safe) because at C there is
// no slack left to wait for backends to exit and a checkpoint to finish,
// as a fast shutdown does; never a smart one, which lets open sessions
// keep committing.
//
// Lifetime. The child is started with the current executable and its own
// process group (a terminal's ^C/^Z to the agent's group does not reach
// it), and deliberately without Pdeathsig: it must outlive a crashed
// agent. When its stdin closes (the daemon exited) or it gets SIGTERM or
// SIGINT, it exits at once if the last heartbeat said there is nothing to
// guard, and otherwise keeps the deadline and fences when it passes:
// the lease the stopped agent no longer renews expires on the leader,
// which then promotes another node. SIGUSR1 makes it stand down without
// fencing: a restarted daemon sends it to the previous daemon's watchdog
// (its pid is kept in agent.socket + ".watchdog.pid") once its own
// watchdog guards the primary under a lease granted to it, so an agent
// restart does not fence a healthy primary. The daemon restarts its
// watchdog whenever it ends.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
)

// watchdogMaxGrace bounds grace_ms (see above).
const watchdogMaxGrace = 250 * time.Millisecond

// WatchdogReason starts the reason the watchdog writes into the marker.
const WatchdogReason = "watchdog: agent stalled"

// WatchdogHeartbeat is one line the daemon writes to its watchdog.
type WatchdogHeartbeat struct {
	// RemainingMs is how long until the daemon's fencing deadline
	// (rounded down); 0: nothing to guard; < 0: the deadline has passed.
	RemainingMs int64 `json:"remaining_ms"`
	// GraceMs is added to the deadline so that a running agent fences
	// first (see above).
	GraceMs int64 `json:"grace_ms,omitempty"`
	// MonoNs is CLOCK_MONOTONIC read before RemainingMs was measured (0:
	// not available).
	MonoNs int64 `json:"mono_ns,omitempty"`
	// Epoch is the highest epoch the daemon knows (for the marker).
	Epoch uint64 `json:"epoch,omitempty"`
	// GiveUpWallNs and GiveUpBootNs are a guarded promotion's give-up
	// time (promoteguard.go) on the wall clock (Unix ns) and on
	// CLOCK_BOOTTIME (0: none), which the deadline above already counts
	// at the heartbeat's sending. The child fences when either clock
	// reaches it (plus the grace), even before its monotonic deadline:
	// its timer runs on CLOCK_MONOTONIC, which stood still while the VM
	// was paused or the host suspended.
	GiveUpWallNs int64 `json:"give_up_wall_ns,omitempty"`
	GiveUpBootNs int64 `json:"give_up_boot_ns,omitempty"`
}

// watchdogPoll bounds the child's sleep while it holds a give-up time on
// the wall clock or CLOCK_BOOTTIME: a timer runs on CLOCK_MONOTONIC, so a
// paused VM's resumption would otherwise be noticed only once that clock
// reached the deadline.
const watchdogPoll = 100 * time.Millisecond

// WatchdogTimer is the watchdog's deadline logic, a pure type: every
// method takes the time from the caller (the child's clocks, or fake ones
// in tests).
type WatchdogTimer struct {
	armed    bool
	deadline time.Time
	// wall and boot: a guarded promotion's give-up time on the wall clock
	// (zero: none) and on CLOCK_BOOTTIME (0: none), plus the grace.
	wall  time.Time
	boot  int64
	epoch uint64
	beats int
}

// Beat applies a heartbeat received at now; age is how long ago the
// daemon measured it (0 when unknown; negative values count as 0). The
// newest heartbeat replaces the deadline, earlier or later.
func (w *WatchdogTimer) Beat(now time.Time, hb WatchdogHeartbeat, age time.Duration) {
	w.beats++
	if hb.Epoch > w.epoch {
		w.epoch = hb.Epoch
	}
	w.wall, w.boot = time.Time{}, 0
	switch {
	case hb.RemainingMs == 0:
		w.armed, w.deadline = false, time.Time{}
	case hb.RemainingMs < 0:
		w.armed, w.deadline = true, now
	default:
		grace := time.Duration(max(hb.GraceMs, 0)) * time.Millisecond
		w.armed = true
		w.deadline = now.Add(time.Duration(hb.RemainingMs)*time.Millisecond + grace - max(age, 0))
		if hb.GiveUpWallNs != 0 {
			w.wall = time.Unix(0, hb.GiveUpWallNs).Add(grace)
		}
		if hb.GiveUpBootNs != 0 {
			w.boot = hb.GiveUpBootNs + int64(grace)
		}
	}
}

// Armed reports whether the watchdog guards a primary.
func (w *WatchdogTimer) Armed() bool { return w.armed }

// Deadline is when the watchdog fences (zero when not armed).
func (w *WatchdogTimer) Deadline() time.Time { return w.deadline }

// Epoch is the highest epoch any heartbeat carried.
func (w *WatchdogTimer) Epoch() uint64 { return w.epoch }

// Beats counts the heartbeats applied.
func (w *WatchdogTimer) Beats() int { return w.beats }

// Due reports whether the watchdog must fence at c: its deadline has
// passed on c.Now's monotonic clock, or a guarded promotion's give-up
// time on the wall clock or CLOCK_BOOTTIME.
func (w *WatchdogTimer) Due(c Clocks) bool { return w.armed && w.left(c) <= 0 }

// left is the time left at c, the least on any clock.
func (w *WatchdogTimer) left(c Clocks) time.Duration {
	l := w.deadline.Sub(c.Now)
	if !w.wall.IsZero() && !c.Wall.IsZero() {
		l = min(l, w.wall.Sub(c.Wall))
	}
	if w.boot != 0 && c.Boot != 0 {
		l = min(l, time.Duration(w.boot-c.Boot))
	}
	return l
}

// Wait is how long to sleep at c before checking Due again (ok=false when
// not armed): until the deadline, at most watchdogPoll while a give-up
// time on the wall clock or CLOCK_BOOTTIME is held.
func (w *WatchdogTimer) Wait(c Clocks) (time.Duration, bool) {
	if !w.armed {
		return 0, false
	}
	l := max(w.left(c), 0)
	if !w.wall.IsZero() || w.boot != 0 {
		l = min(l, watchdogPoll)
	}
	return l, true
}

// ---- the child: `pgdr-agent watchdog` ---------------------------------

type watchdogLine struct {
	hb  WatchdogHeartbeat
	at  time.Time     // receipt, on this process's monotonic clock
	age time.Duration // receipt minus the heartbeat's mono_ns
}

// RunWatchdog is the watchdog process: it reads heartbeats from in until
// the deadline of the newest one passes (then it fences and returns) or
// nothing is left to guard once in is closed or ctx ends (SIGTERM/SIGINT).
// A value on standDown (SIGUSR1) makes it return without fencing. It
// returns the process's exit status.
func RunWatchdog(ctx context.Context, cfg *config.Config, in io.Reader, standDown <-chan os.Signal, log *slog.Logger) int {
	log = log.With("pid", os.Getpid())
	// The agent's stderr may be a pipe whose reader went away with the
	// agent: a write to it must not kill the watchdog (Go exits on SIGPIPE
	// on fd 2 unless it is ignored).
	signal.Ignore(syscall.SIGPIPE)
	lines := make(chan watchdogLine, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			at := time.Now()
			mono, monoOK := monoNow()
			var hb WatchdogHeartbeat
			if err := json.Unmarshal(sc.Bytes(), &hb); err != nil {
				log.Warn("ignoring a malformed heartbeat", "line", strings.TrimSpace(sc.Text()), "err", err)
				continue
			}
			var age time.Duration
			if monoOK && hb.MonoNs > 0 {
				age = time.Duration(mono - hb.MonoNs)
			}
			lines <- watchdogLine{hb: hb, at: at, age: age}
		}
	}()
	log.Info("watchdog started", "pgdata", cfg.Postgres.PGData)
	var wt WatchdogTimer
	var last time.Time // when the last heartbeat arrived
	apply := func(l watchdogLine) {
		was := wt.Armed()
		wt.Beat(l.at, l.hb, l.age)
		last = l.at
		switch {
		case wt.Armed() && !was:
			log.Info("guarding the primary: fencing PostgreSQL unless a heartbeat moves the deadline", "deadline_in", time.Until(wt.Deadline()).Round(time.Millisecond), "heartbeat_age", l.age)
		case !wt.Armed() && was:
			log.Info("nothing to guard (not a writable primary)")
		}
	}
	done := ctx.Done()
	open, stopping := true, false
	for {
		var timer <-chan time.Time
		var tm *time.Timer
		if wait, armed := wt.Wait(ReadClocks()); armed {
			tm = time.NewTimer(wait)
			timer = tm.C
		} else if !open || stopping {
			log.Info("watchdog exiting: nothing to guard", "agent_gone", !open)
			return 0
		}
		select {
		case l, ok := <-lines:
			if !ok {
				open, lines = false, nil
				if wt.Armed() {
					log.Warn("the agent closed the watchdog's pipe (it exited); still guarding its primary lease: fencing when the deadline passes unless the agent comes back", "deadline_in", time.Until(wt.Deadline()).Round(time.Millisecond))
				}
				break
			}
			apply(l)
		case <-done:
			done, stopping = nil, true
			if wt.Armed() {
				log.Warn("signalled to stop while guarding a primary: exiting once the lease deadline passes (after fencing) or the agent says there is nothing to guard", "deadline_in", time.Until(wt.Deadline()).Round(time.Millisecond))
			}
		case <-standDown:
			log.Info("a newer agent process guards this server: standing down")
			return 0
		case <-timer:
			// Heartbeats already queued are newer than the deadline's.
		drain:
			for lines != nil {
				select {
				case l, ok := <-lines:
					if !ok {
						open, lines = false, nil
						break drain
					}
					apply(l)
				default:
					break drain
				}
			}
			if !wt.Due(ReadClocks()) {
				break
			}
			reason := fmt.Sprintf("%s: no heartbeat moved the lease deadline (last heartbeat %s ago)", WatchdogReason, time.Since(last).Round(time.Millisecond))
			if !open {
				reason = fmt.Sprintf("%s: the agent exited and its lease deadline passed (last heartbeat %s ago)", WatchdogReason, time.Since(last).Round(time.Millisecond))
			}
			if err := watchdogFence(cfg, wt.Epoch(), reason, log); err != nil {
				log.Error("watchdog fencing failed", "err", err)
				return 1
			}
			return 0
		}
		if tm != nil {
			tm.Stop()
		}
	}
}

// watchdogFence stops PostgreSQL with an immediate shutdown and writes the
// marker (keeping one that is already there: the agent fenced first).
func watchdogFence(cfg *config.Config, epoch uint64, reason string, log *slog.Logger) error {
	pgdata := cfg.Postgres.PGData
	log.Error("WATCHDOG FENCING PostgreSQL: the agent did not renew its deadline; stopping it (immediate shutdown)", "reason", reason, "epoch", epoch, "pgdata", pgdata)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := newPG(cfg, log)
	var errs []error
	if pgctl.PostmasterRunning(pgdata) {
		if err := pg.StopMode(ctx, pgctl.Immediate, pgctl.DefaultStopTimeout); err != nil && pgctl.PostmasterRunning(pgdata) {
			// pg_ctl could not even run: signal the postmaster directly
			// (SIGQUIT is what pg_ctl -m immediate sends).
			errs = append(errs, err)
			if pid, perr := pgctl.ReadPID(pgdata); perr == nil {
				if kerr := syscall.Kill(pid, syscall.SIGQUIT); kerr != nil {
					errs = append(errs, fmt.Errorf("SIGQUIT to the postmaster %d: %w", pid, kerr))
				} else {
					errs = nil
				}
			}
		}
	}
	if fi, _ := health.ReadFenced(pgdata); fi == nil {
		if err := health.WriteFenced(pgdata, health.FenceInfo{Node: cfg.Node.Name, Reason: reason, Epoch: epoch, Time: time.Now().UTC()}); err != nil {
			errs = append(errs, fmt.Errorf("writing the fenced marker: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Error("PostgreSQL fenced by the watchdog (stopped)", "stop_took", time.Since(start).Round(time.Millisecond), "marker", health.FencedPath(pgdata))
	return nil
}

// ---- the daemon's side ------------------------------------------------

// watchdogState is the daemon's side of the watchdog (zero value: off).
type watchdogState struct {
	mu       sync.Mutex
	argv     []string      // the watchdog command; nil: no watchdog
	notify   chan struct{} // a new deadline to send
	deadline time.Time     // zero: nothing to guard
	granted  bool          // the lease was granted when deadline was set
	known    bool          // the lease loop decided on a health report
	orphan   int           // a previous daemon's watchdog still running
	// pendingUntil: a guarded promotion's give-up time (promoteguard.go;
	// zero: none). The heartbeat's deadline is never later while it is set.
	pendingUntil giveUpTime
	pendingSeq   uint64 // guards begun
	pendingSent  uint64 // the pendingSeq the last heartbeat written carried
}

// EnableWatchdog makes Run start argv (`pgdr-agent watchdog --config F`,
// with the agent's executable) as the watchdog when failover.watchdog is
// on and coordinators are configured.
func (d *Daemon) EnableWatchdog(argv []string) {
	d.wd.mu.Lock()
	d.wd.argv = append([]string(nil), argv...)
	d.wd.notify = make(chan struct{}, 1)
	d.wd.mu.Unlock()
}

// watchdogEnabled: failover.watchdog (default true) with a lease to guard.
func (d *Daemon) watchdogEnabled() bool {
	d.wd.mu.Lock()
	argv := d.wd.argv
	d.wd.mu.Unlock()
	w := d.cfg.Failover.Watchdog
	return d.leaseEnabled() && len(argv) > 0 && (w == nil || *w)
}

// watchdogBeat records the lease loop's verdict: the fencing deadline of a
// (maybe) writable primary, or zero when there is nothing to guard.
func (d *Daemon) watchdogBeat(deadline time.Time) {
	known := d.Latest() != nil
	granted := false
	if !deadline.IsZero() {
		granted = d.leaseGranted()
	}
	d.wd.mu.Lock()
	defer d.wd.mu.Unlock()
	if d.wd.notify == nil {
		return
	}
	d.wd.deadline, d.wd.granted, d.wd.known = deadline, granted, known
	select {
	case d.wd.notify <- struct{}{}:
	default:
	}
}

// watchdogHeartbeat builds the heartbeat for the current deadline now;
// handover says whether a previous watchdog may stand down once this one
// got it.
func (d *Daemon) watchdogHeartbeat() (hb WatchdogHeartbeat, handover bool) {
	hb, handover, _ = d.watchdogHeartbeatSeq()
	return hb, handover
}

// watchdogHeartbeatSeq is watchdogHeartbeat, and the guard (pendingSeq)
// the heartbeat carries.
func (d *Daemon) watchdogHeartbeatSeq() (hb WatchdogHeartbeat, handover bool, seq uint64) {
	c := d.readClocks()
	d.wd.mu.Lock()
	deadline, granted, known := d.wd.deadline, d.wd.granted, d.wd.known
	if p := d.wd.pendingUntil; !p.isZero() {
		// A guarded promotion: fenced at its give-up time at the latest,
		// whatever the lease loop says (a replica's heartbeat says 0), on
		// whichever clock reaches it first. The new watchdog holds the
		// same deadline, so a previous one may stand down.
		if pd := c.Now.Add(p.left(c)); deadline.IsZero() || pd.Before(deadline) {
			deadline = pd
		}
		if !p.wall.IsZero() {
			hb.GiveUpWallNs = p.wall.UnixNano()
		}
		hb.GiveUpBootNs = p.boot
		granted, seq = true, d.wd.pendingSeq
	}
	d.wd.mu.Unlock()
	hb.Epoch = d.epoch.Current()
	if deadline.IsZero() {
		return WatchdogHeartbeat{Epoch: hb.Epoch}, known, seq
	}
	// mono_ns first, remaining after: the child's deadline is then never
	// later than ours (see the proof above).
	if mono, ok := monoNow(); ok {
		hb.MonoNs = mono
	}
	hb.RemainingMs = time.Until(deadline).Milliseconds()
	if hb.RemainingMs <= 0 {
		hb.RemainingMs = -1
	}
	hb.GraceMs = min(d.safetyMargin()/4, watchdogMaxGrace).Milliseconds()
	return hb, granted, seq
}

func (d *Daemon) watchdogPIDPath() string { return d.cfg.Agent.Socket + ".watchdog.pid" }

// watchdogLoop runs the watchdog process and restarts it when it ends.
func (d *Daemon) watchdogLoop(ctx context.Context) {
	log := d.log.With("component", "watchdog")
	d.findOrphanWatchdog(log)
	for ctx.Err() == nil {
		err := d.runWatchdogChild(ctx, log)
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

// findOrphanWatchdog notes a previous daemon's watchdog that still runs
// (it stands down once this daemon's watchdog guards the primary).
func (d *Daemon) findOrphanWatchdog(log *slog.Logger) {
	b, err := os.ReadFile(d.watchdogPIDPath())
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
	d.wd.mu.Lock()
	d.wd.orphan = pid
	d.wd.mu.Unlock()
}

func (d *Daemon) runWatchdogChild(ctx context.Context, log *slog.Logger) error {
	d.wd.mu.Lock()
	argv, notify := d.wd.argv, d.wd.notify
	d.wd.mu.Unlock()
	r, w, err := os.Pipe()
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
		w.Close()
		return fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	pid := cmd.Process.Pid
	log.Info("watchdog process started", "watchdog_pid", pid)
	if err := os.WriteFile(d.watchdogPIDPath(), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		log.Warn("writing the watchdog's pid file", "path", d.watchdogPIDPath(), "err", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer w.Close() // EOF for the child: it keeps guarding if it must
	for {
		hb, handover, seq := d.watchdogHeartbeatSeq()
		line, _ := json.Marshal(hb)
		w.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := w.Write(append(line, '\n')); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				log.Warn("the watchdog does not read its heartbeats", "watchdog_pid", pid)
			} else {
				log.Warn("writing a heartbeat to the watchdog", "watchdog_pid", pid, "err", err)
			}
		} else {
			if seq > 0 {
				d.wd.mu.Lock()
				d.wd.pendingSent = max(d.wd.pendingSent, seq)
				d.wd.mu.Unlock()
			}
			if handover {
				d.standDownOrphan(pid, log)
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

func (d *Daemon) standDownOrphan(self int, log *slog.Logger) {
	d.wd.mu.Lock()
	pid := d.wd.orphan
	d.wd.orphan = 0
	d.wd.mu.Unlock()
	if pid == 0 || pid == self {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("telling the previous agent's watchdog to stand down", "watchdog_pid", pid, "err", err)
		return
	}
	log.Info("the previous agent's watchdog stands down: this agent's watchdog guards the primary", "watchdog_pid", pid)
}
