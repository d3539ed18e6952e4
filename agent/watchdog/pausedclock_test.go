package watchdog

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/config"
)

// The tests of issue 12's paused-VM finding on the watchdog's side (the
// watcher's are the daemon's, agent/daemon/pausedclock_test.go):
// CLOCK_MONOTONIC stands still while the hypervisor pauses the guest (or
// the host is suspended), so a give-up time counted on it alone comes late
// after the pause, while the leader, whose clock kept running, already
// counts the promotion as settled. The wall clock (set right once the
// guest resumes) and CLOCK_BOOTTIME (which counts a suspension) make it
// pass on time: the earliest of the three counts.

// jumpedClocks returns a clock reading for Deps.Clocks that, once jump is
// set, reads the wall clock (wall) or CLOCK_BOOTTIME (!wall) ahead by
// ahead while the monotonic clock (Now) runs as ever: a resumed guest.
func jumpedClocks(jump *atomic.Bool, wall bool, ahead time.Duration) func() Clocks {
	return func() Clocks {
		c := ReadClocks()
		if jump.Load() {
			if wall {
				c.Wall = c.Wall.Add(ahead)
			} else {
				c.Boot += int64(ahead)
			}
		}
		return c
	}
}

func clockCases(t *testing.T) []struct {
	name string
	wall bool
} {
	cases := []struct {
		name string
		wall bool
	}{{"wall clock", true}}
	if _, ok := BootNow(); ok {
		cases = append(cases, struct {
			name string
			wall bool
		}{"CLOCK_BOOTTIME", false})
	} else {
		t.Log("no CLOCK_BOOTTIME here: only the wall clock is tested")
	}
	return cases
}

// TestPromoteGuardHeartbeatOnResumedClocks: the watchdog's heartbeat
// judges the guard's give-up time on every clock (a passed one says < 0:
// fence at once), and carries it on the wall clock and CLOCK_BOOTTIME for
// the child, whose own timer runs on the monotonic clock.
func TestPromoteGuardHeartbeatOnResumedClocks(t *testing.T) {
	for _, c := range clockCases(t) {
		t.Run(c.name, func(t *testing.T) {
			var jump atomic.Bool
			w, gd := newGuard(t, nil, jumpedClocks(&jump, c.wall, 2*time.Minute))
			g := GiveUpAfter(w.readClocks(), time.Minute, time.Minute)
			if err := gd.Guard(6, g); err != nil {
				t.Fatal(err)
			}
			hb, _ := w.Heartbeat()
			if hb.RemainingMs < 50_000 || hb.GiveUpWallNs != g.wall.UnixNano() || hb.GiveUpBootNs != g.boot {
				t.Fatalf("heartbeat %+v, want a minute left and the give-up time %s (boot %d)", hb, g, g.boot)
			}
			jump.Store(true)
			if hb, _ := w.Heartbeat(); hb.RemainingMs >= 0 {
				t.Fatalf("heartbeat %+v after the %s passed the give-up time, want < 0 (fence at once)", hb, c.name)
			}
		})
	}
}

// TestWatchdogTimerResumedClocks: the child fences at a guarded
// promotion's give-up time on the wall clock or CLOCK_BOOTTIME (plus the
// grace) although its monotonic deadline is far, polls while it holds
// one, and forgets it with the next heartbeat that carries none.
func TestWatchdogTimerResumedClocks(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const boot0 = int64(500 * time.Second)
	hb := Heartbeat{RemainingMs: 60_000, GraceMs: 250, Epoch: 6,
		GiveUpWallNs: t0.Add(60 * time.Second).UnixNano(), GiveUpBootNs: boot0 + int64(60*time.Second)}
	var w Timer
	w.Beat(t0, hb, 0)
	at := func(mono, wall, boot time.Duration) Clocks {
		return Clocks{Now: t0.Add(mono), Wall: t0.Add(wall), Boot: boot0 + int64(boot)}
	}
	for _, c := range []struct {
		what string
		c    Clocks
		due  bool
	}{
		{"before the pause", at(time.Second, time.Second, time.Second), false},
		{"the wall clock at the give-up time, within the grace", at(time.Second, 60*time.Second+249*time.Millisecond, time.Second), false},
		{"the wall clock past the give-up time and the grace", at(time.Second, 60*time.Second+250*time.Millisecond, time.Second), true},
		{"CLOCK_BOOTTIME past it", at(time.Second, time.Second, 61*time.Second), true},
		{"the wall clock stepped back: the monotonic deadline still holds", at(60*time.Second+250*time.Millisecond, -time.Hour, time.Second), true},
		{"CLOCK_BOOTTIME unknown", Clocks{Now: t0.Add(time.Second), Wall: t0.Add(time.Second)}, false},
	} {
		if got := w.Due(c.c); got != c.due {
			t.Errorf("%s: due %t, want %t", c.what, got, c.due)
		}
	}
	if wait, ok := w.Wait(at(time.Second, time.Second, time.Second)); !ok || wait > poll {
		t.Errorf("wait %s while holding a give-up time on other clocks, want at most %s", wait, poll)
	}
	w.Beat(t0.Add(2*time.Second), Heartbeat{RemainingMs: 5000}, 0) // a lease's deadline only
	if w.Due(at(3*time.Second, time.Hour, time.Hour)) {
		t.Error("a heartbeat without a give-up time still fences on the wall clock")
	}
	if wait, _ := w.Wait(at(3*time.Second, 3*time.Second, 3*time.Second)); wait != 4*time.Second {
		t.Errorf("wait %s on the lease's deadline, want 4s", wait)
	}
}

// TestRunWatchdogGiveUpOnWallClock: the child's loop fences once the wall
// clock reaches a guarded promotion's give-up time, although its
// monotonic deadline is a minute away (the daemon measured that before
// the guest was paused).
func TestRunWatchdogGiveUpOnWallClock(t *testing.T) {
	cfg := &config.Config{}
	cfg.Postgres.PGData = t.TempDir()
	cfg.Node.Name = "n1"
	mono, _ := MonoNow()
	b, _ := json.Marshal(Heartbeat{RemainingMs: 60_000, MonoNs: mono, Epoch: 6, GiveUpWallNs: time.Now().Add(300 * time.Millisecond).UnixNano()})
	start := time.Now()
	_, done, _, _ := watchdogRun(t, cfg, string(b))
	if c := wait(t, done, 10*time.Second); c != 0 {
		t.Fatalf("exit %d", c)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("fenced after %s, before the give-up time", took)
	}
	if fi, err := health.ReadFenced(cfg.Postgres.PGData); err != nil || fi == nil || !strings.HasPrefix(fi.Reason, Reason) {
		t.Fatalf("marker %+v %v", fi, err)
	}
}
