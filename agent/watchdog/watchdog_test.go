package watchdog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// clocksAt is a reading of the clocks at t on every one of them.
func clocksAt(t time.Time) Clocks { return Clocks{Now: t, Wall: t.Round(0)} }

func TestWatchdogTimer(t *testing.T) {
	t0 := time.Unix(1000, 0) // a fake clock
	ms := func(n int64) Heartbeat { return Heartbeat{RemainingMs: n, Epoch: 3} }
	var w Timer
	if w.Armed() || w.Due(clocksAt(t0.Add(time.Hour))) {
		t.Fatal("a new watchdog guards nothing")
	}
	if _, ok := w.Wait(clocksAt(t0)); ok {
		t.Fatal("Wait without a deadline")
	}

	// The deadline counts from the receipt, minus the heartbeat's age.
	w.Beat(t0, ms(3000), 0)
	if !w.Armed() || !w.Deadline().Equal(t0.Add(3*time.Second)) || w.Epoch() != 3 {
		t.Fatalf("armed %v deadline %v epoch %d", w.Armed(), w.Deadline().Sub(t0), w.Epoch())
	}
	if w.Due(clocksAt(t0.Add(2999*time.Millisecond))) || !w.Due(clocksAt(t0.Add(3*time.Second))) {
		t.Fatal("due exactly at the deadline")
	}
	if d, ok := w.Wait(clocksAt(t0.Add(time.Second))); !ok || d != 2*time.Second {
		t.Fatalf("Wait = %v %v", d, ok)
	}
	if d, _ := w.Wait(clocksAt(t0.Add(time.Minute))); d != 0 {
		t.Fatalf("Wait past the deadline = %v", d)
	}

	// A newer heartbeat moves the deadline later...
	w.Beat(t0.Add(time.Second), ms(3000), 200*time.Millisecond)
	if want := t0.Add(3800 * time.Millisecond); !w.Deadline().Equal(want) {
		t.Fatalf("deadline %v, want %v", w.Deadline().Sub(t0), want.Sub(t0))
	}
	// ...or earlier (the newest wins: the daemon's deadline moved back).
	w.Beat(t0.Add(1100*time.Millisecond), ms(500), 0)
	if want := t0.Add(1600 * time.Millisecond); !w.Deadline().Equal(want) {
		t.Fatalf("deadline %v, want %v", w.Deadline().Sub(t0), want.Sub(t0))
	}
	// The grace moves it later by exactly grace_ms.
	w.Beat(t0.Add(1200*time.Millisecond), Heartbeat{RemainingMs: 500, GraceMs: 250}, 100*time.Millisecond)
	if want := t0.Add(1850 * time.Millisecond); !w.Deadline().Equal(want) {
		t.Fatalf("deadline %v, want %v", w.Deadline().Sub(t0), want.Sub(t0))
	}
	// A negative age (no shared clock) counts as 0.
	w.Beat(t0.Add(2*time.Second), ms(1000), -time.Hour)
	if want := t0.Add(3 * time.Second); !w.Deadline().Equal(want) {
		t.Fatalf("deadline %v, want %v", w.Deadline().Sub(t0), want.Sub(t0))
	}
	// A stale heartbeat (sat in the pipe longer than it had left) is due
	// at once: the child never fences later than the daemon would have.
	w.Beat(t0.Add(10*time.Second), ms(1000), 5*time.Second)
	if !w.Due(clocksAt(t0.Add(10 * time.Second))) {
		t.Fatalf("a stale heartbeat: deadline %v after receipt", w.Deadline().Sub(t0.Add(10*time.Second)))
	}
	// 0 disarms; a negative remaining_ms means "already past".
	w.Beat(t0.Add(11*time.Second), ms(0), 0)
	if w.Armed() || w.Due(clocksAt(t0.Add(time.Hour))) {
		t.Fatal("remaining_ms 0 must disarm")
	}
	w.Beat(t0.Add(12*time.Second), ms(-1), 0)
	if !w.Due(clocksAt(t0.Add(12 * time.Second))) {
		t.Fatal("remaining_ms < 0 must be due at once")
	}
	if w.Beats() != 8 {
		t.Fatalf("beats %d", w.Beats())
	}
}

// TestWatchdogHeartbeatNeverLater: the heartbeat the daemon builds gives
// the child a deadline no later than the daemon's own (mono_ns read before
// remaining_ms is measured, remaining_ms rounded down).
func TestWatchdogHeartbeatNeverLater(t *testing.T) {
	// The default safety margin (failover.safety_margin): 1s.
	d := New(Config{Enabled: true, SafetyMargin: time.Second}, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	d.Enable([]string{"pgdr-agent", "watchdog"})
	if hb, handover := d.Heartbeat(); hb.RemainingMs != 0 || handover {
		t.Fatalf("nothing to guard: %+v %v", hb, handover)
	}
	for i := range 200 {
		deadline := time.Now().Add(time.Duration(i) * 137 * time.Microsecond)
		d.Beat(deadline)
		hb, _ := d.Heartbeat()
		// The receipt first, then the monotonic clock, as the child reads
		// them (RunChild): the other order would add the gap between the
		// two readings to the child's deadline.
		recv := time.Now()
		mono, ok := MonoNow()
		if !ok || hb.MonoNs == 0 {
			t.Skip("no shared monotonic clock here")
		}
		var w Timer
		w.Beat(recv, hb, time.Duration(mono-hb.MonoNs))
		if !w.Armed() {
			t.Fatalf("a guarding heartbeat disarmed: %+v", hb)
		}
		if hb.RemainingMs < 0 { // built after the deadline: fence at once
			if !w.Due(clocksAt(recv)) {
				t.Fatalf("a passed deadline is not due at once: %+v", hb)
			}
			continue
		}
		grace := time.Duration(hb.GraceMs) * time.Millisecond
		if grace != 250*time.Millisecond { // min(1s/4, 250ms): the default margin
			t.Fatalf("grace %v", grace)
		}
		if w.Deadline().After(deadline.Add(grace)) {
			t.Fatalf("the child's deadline is %v later than the daemon's plus the grace (%+v)", w.Deadline().Sub(deadline.Add(grace)), hb)
		}
	}
	d.Beat(time.Now().Add(-time.Second))
	if hb, _ := d.Heartbeat(); hb.RemainingMs >= 0 {
		t.Fatalf("a passed deadline must say < 0: %+v", hb)
	}
	d.Beat(time.Time{})
	if hb, _ := d.Heartbeat(); hb.RemainingMs != 0 {
		t.Fatalf("disarm: %+v", hb)
	}
}

func watchdogRun(t *testing.T, cfg *config.Config, lines ...string) (w *os.File, done chan int, sd chan os.Signal, cancel context.CancelFunc) {
	t.Helper()
	w, done, sd, cancel, _ = watchdogRunLogged(t, cfg, lines...)
	return w, done, sd, cancel
}

// watchdogRunLogged is watchdogRun with the loop's log kept, so that a test
// can wait for what the loop did (it read a heartbeat and is guarding).
func watchdogRunLogged(t *testing.T, cfg *config.Config, lines ...string) (w *os.File, done chan int, sd chan os.Signal, cancel context.CancelFunc, logb *testutil.SyncBuffer) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done = make(chan int, 1)
	sd = make(chan os.Signal, 1)
	logb = &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logb, nil))
	go func() { done <- RunChild(ctx, cfg, r, sd, log) }()
	for _, l := range lines {
		w.WriteString(l + "\n")
	}
	return w, done, sd, cancel, logb
}

// waitGuarding waits until the loop has taken a heartbeat and is guarding.
func waitGuarding(t *testing.T, logb *testutil.SyncBuffer) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the watchdog to guard the primary", func() (bool, error) {
		return strings.Contains(logb.String(), "guarding the primary"), fmt.Errorf("log:\n%s", logb.String())
	})
}

func hbLine(ms int64) string {
	mono, _ := MonoNow()
	b, _ := json.Marshal(Heartbeat{RemainingMs: ms, MonoNs: mono, Epoch: 7})
	return string(b)
}

func wait(t *testing.T, done chan int, within time.Duration) int {
	t.Helper()
	select {
	case c := <-done:
		return c
	case <-time.After(within):
		t.Fatalf("the watchdog did not return within %s", within)
	}
	return -1
}

// TestRunWatchdog runs the child's loop in process on a data directory
// with no server running (fencing then only writes the marker).
func TestRunWatchdog(t *testing.T) {
	cfgFor := func(t *testing.T) *config.Config {
		c := &config.Config{}
		c.Postgres.PGData = t.TempDir()
		c.Node.Name = "n1"
		return c
	}
	t.Run("fences at the deadline", func(t *testing.T) {
		cfg := cfgFor(t)
		start := time.Now()
		_, done, _, _ := watchdogRun(t, cfg, hbLine(300))
		if c := wait(t, done, 5*time.Second); c != 0 {
			t.Fatalf("exit %d", c)
		}
		if took := time.Since(start); took < 250*time.Millisecond || took > 2*time.Second {
			t.Errorf("fenced after %s, want ~300ms", took)
		}
		fi, err := health.ReadFenced(cfg.Postgres.PGData)
		if err != nil || fi == nil || !strings.HasPrefix(fi.Reason, Reason) || fi.Epoch != 7 || fi.Node != "n1" {
			t.Fatalf("marker %+v %v", fi, err)
		}
	})
	t.Run("newer heartbeats extend it; 0 disarms; EOF then exits", func(t *testing.T) {
		// Heartbeats every 100 ms with 1 s left each time: the loop outlives
		// its first deadline only if they extend it, and a loaded machine
		// has ten times the pause's worth of margin before a late heartbeat
		// would fence.
		cfg := cfgFor(t)
		start := time.Now()
		w, done, _, _ := watchdogRun(t, cfg, hbLine(1000))
		for time.Since(start) < 1500*time.Millisecond {
			time.Sleep(100 * time.Millisecond)
			w.WriteString(hbLine(1000) + "\n")
		}
		select {
		case c := <-done:
			t.Fatalf("returned %d while heartbeats kept coming", c)
		default:
		}
		w.WriteString(hbLine(0) + "\n")
		// Disarmed: nothing happens past the last heartbeat's deadline.
		time.Sleep(1500 * time.Millisecond)
		select {
		case c := <-done:
			t.Fatalf("returned %d while the pipe is open", c)
		default:
		}
		w.Close()
		if c := wait(t, done, 2*time.Second); c != 0 {
			t.Fatalf("exit %d", c)
		}
		if fi, _ := health.ReadFenced(cfg.Postgres.PGData); fi != nil {
			t.Fatalf("fenced although disarmed: %+v", fi)
		}
	})
	t.Run("the agent exits while guarding: still fences", func(t *testing.T) {
		cfg := cfgFor(t)
		start := time.Now()
		w, done, _, _ := watchdogRun(t, cfg, hbLine(400))
		w.Close()
		if c := wait(t, done, 5*time.Second); c != 0 {
			t.Fatalf("exit %d", c)
		}
		if took := time.Since(start); took < 350*time.Millisecond {
			t.Errorf("fenced after %s, before the deadline", took)
		}
		if fi, _ := health.ReadFenced(cfg.Postgres.PGData); fi == nil || !strings.Contains(fi.Reason, "exited") {
			t.Fatalf("marker %+v", fi)
		}
	})
	t.Run("SIGTERM while guarding still fences; SIGUSR1 stands down", func(t *testing.T) {
		cfg := cfgFor(t)
		_, done, _, cancel, logb := watchdogRunLogged(t, cfg, hbLine(300))
		waitGuarding(t, logb)
		cancel()
		wait(t, done, 5*time.Second)
		if fi, _ := health.ReadFenced(cfg.Postgres.PGData); fi == nil {
			t.Fatal("not fenced")
		}
		cfg = cfgFor(t)
		_, done2, sd, _, logb2 := watchdogRunLogged(t, cfg, hbLine(3000))
		waitGuarding(t, logb2)
		sd <- os.Interrupt
		wait(t, done2, 5*time.Second)
		// It returned: nothing of it is left to fence later.
		if fi, _ := health.ReadFenced(cfg.Postgres.PGData); fi != nil {
			t.Fatalf("fenced after standing down: %+v", fi)
		}
	})
	t.Run("an existing marker is kept", func(t *testing.T) {
		cfg := cfgFor(t)
		health.WriteFenced(cfg.Postgres.PGData, health.FenceInfo{Node: "n1", Reason: "the agent fenced first"})
		_, done, _, _ := watchdogRun(t, cfg, hbLine(-1))
		wait(t, done, 2*time.Second)
		if fi, _ := health.ReadFenced(cfg.Postgres.PGData); fi == nil || fi.Reason != "the agent fenced first" {
			t.Fatalf("marker %+v", fi)
		}
	})
}
