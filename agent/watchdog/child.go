package watchdog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
)

// The child: `pgdr-agent watchdog` (agent/cli runs RunChild).

type line struct {
	hb  Heartbeat
	at  time.Time     // receipt, on this process's monotonic clock
	age time.Duration // receipt minus the heartbeat's mono_ns
}

// RunChild is the watchdog process: it reads heartbeats from in until
// the deadline of the newest one passes (then it fences and returns) or
// nothing is left to guard once in is closed or ctx ends (SIGTERM/SIGINT).
// A value on standDown (SIGUSR1) makes it return without fencing. It
// returns the process's exit status.
func RunChild(ctx context.Context, cfg *config.Config, in io.Reader, standDown <-chan os.Signal, log *slog.Logger) int {
	log = log.With("pid", os.Getpid())
	// The agent's stderr may be a pipe whose reader went away with the
	// agent: a write to it must not kill the watchdog (Go exits on SIGPIPE
	// on fd 2 unless it is ignored).
	signal.Ignore(syscall.SIGPIPE)
	lines := make(chan line, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			at := time.Now()
			mono, monoOK := MonoNow()
			var hb Heartbeat
			if err := json.Unmarshal(sc.Bytes(), &hb); err != nil {
				log.Warn("ignoring a malformed heartbeat", "line", strings.TrimSpace(sc.Text()), "err", err)
				continue
			}
			var age time.Duration
			if monoOK && hb.MonoNs > 0 {
				age = time.Duration(mono - hb.MonoNs)
			}
			lines <- line{hb: hb, at: at, age: age}
		}
	}()
	log.Info("watchdog started", "pgdata", cfg.Postgres.PGData)
	var wt Timer
	var last time.Time // when the last heartbeat arrived
	apply := func(l line) {
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
			reason := fmt.Sprintf("%s: no heartbeat moved the lease deadline (last heartbeat %s ago)", Reason, time.Since(last).Round(time.Millisecond))
			if !open {
				reason = fmt.Sprintf("%s: the agent exited and its lease deadline passed (last heartbeat %s ago)", Reason, time.Since(last).Round(time.Millisecond))
			}
			if err := fence(cfg, wt.Epoch(), reason, log); err != nil {
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

// fence stops PostgreSQL with an immediate shutdown and writes the
// marker (keeping one that is already there: the agent fenced first).
func fence(cfg *config.Config, epoch uint64, reason string, log *slog.Logger) error {
	pgdata := cfg.Postgres.PGData
	log.Error("WATCHDOG FENCING PostgreSQL: the agent did not renew its deadline; stopping it (immediate shutdown)", "reason", reason, "epoch", epoch, "pgdata", pgdata)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: pgdata, DSN: cfg.Postgres.DSN, Log: log})
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
