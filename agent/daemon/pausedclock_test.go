package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/config"
)

// The tests of issue 12's paused-VM finding: CLOCK_MONOTONIC stands still
// while the hypervisor pauses the guest (or the host is suspended), so a
// give-up time counted on it alone comes late after the pause, while the
// leader, whose clock kept running, already counts the promotion as
// settled. The wall clock (set right once the guest resumes) and
// CLOCK_BOOTTIME (which counts a suspension) make it pass on time: the
// earliest of the three counts.

// jumpedClocks returns a clock reading for d.clocks that, once jump is
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
	if _, ok := bootNow(); ok {
		cases = append(cases, struct {
			name string
			wall bool
		}{"CLOCK_BOOTTIME", false})
	} else {
		t.Log("no CLOCK_BOOTTIME here: only the wall clock is tested")
	}
	return cases
}

// TestPromoteWatchGivesUpOnResumedClocks: a guarded pending promotion
// whose give-up time is 60s away on the monotonic clock is fenced as soon
// as the wall clock (or CLOCK_BOOTTIME) reads past it: the guest was
// paused for longer than the window.
func TestPromoteWatchGivesUpOnResumedClocks(t *testing.T) {
	const window = 60 * time.Second
	for _, c := range clockCases(t) {
		t.Run(c.name, func(t *testing.T) {
			received := time.Now()
			fp := &fakePromotion{finish: false}
			d, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: time.Now,
				left: func(string) time.Duration { return time.Minute - time.Since(received) }})
			var jump atomic.Bool
			d.clocks = jumpedClocks(&jump, c.wall, window)
			res := cc.carryOut(context.Background(), settleOrder(6, time.Now(), time.Minute, window))
			if res.Ok || !res.Pending {
				t.Fatalf("unfinished pg_promote: %+v", res)
			}
			if hb, _ := d.watchdogHeartbeat(); hb.RemainingMs < 30_000 {
				t.Fatalf("heartbeat before the pause %+v, want about %s left", hb, window-d.safetyMargin())
			}
			jump.Store(true) // resumed: the monotonic clock still has ~59s to go
			start := time.Now()
			reason := waitFenced(t, d, 10*time.Second)
			if !strings.Contains(reason, "settle deadline") {
				t.Fatalf("fenced for %q", reason)
			}
			t.Logf("fenced %s after the %s jumped past the give-up time", time.Since(start).Round(time.Millisecond), c.name)
		})
	}
}

// TestPromoteGuardHeartbeatOnResumedClocks: the watchdog's heartbeat
// judges the guard's give-up time on every clock (a passed one says < 0:
// fence at once), and carries it on the wall clock and CLOCK_BOOTTIME for
// the child, whose own timer runs on the monotonic clock.
func TestPromoteGuardHeartbeatOnResumedClocks(t *testing.T) {
	for _, c := range clockCases(t) {
		t.Run(c.name, func(t *testing.T) {
			d, _ := promoteDaemon(t, &fakePromotion{}, nil)
			var jump atomic.Bool
			d.clocks = jumpedClocks(&jump, c.wall, 2*time.Minute)
			g := giveUpAfter(d.readClocks(), time.Minute, time.Minute)
			if err := d.guardPromotion(6, g); err != nil {
				t.Fatal(err)
			}
			hb, _ := d.watchdogHeartbeat()
			if hb.RemainingMs < 50_000 || hb.GiveUpWallNs != g.wall.UnixNano() || hb.GiveUpBootNs != g.boot {
				t.Fatalf("heartbeat %+v, want a minute left and the give-up time %s (boot %d)", hb, g, g.boot)
			}
			jump.Store(true)
			if hb, _ := d.watchdogHeartbeat(); hb.RemainingMs >= 0 {
				t.Fatalf("heartbeat %+v after the %s passed the give-up time, want < 0 (fence at once)", hb, c.name)
			}
		})
	}
}

// TestPromoteWatchResumedEarliestClock: a guard resumed from pgdata after
// an agent restart gives up at the earliest of its recorded times: the
// wall clock's give_up (written by older agents too) or give_up_boot_ns
// when either is earlier than the monotonic one.
func TestPromoteWatchResumedEarliestClock(t *testing.T) {
	if _, ok := monoNow(); !ok {
		t.Skip("no CLOCK_MONOTONIC on this platform")
	}
	// Each record is written right before it is resumed: the give-up time
	// is a second later on one clock, an hour on the others.
	recs := map[string]func() string{
		"wall clock": func() string {
			mono, _ := monoNow()
			return fmt.Sprintf(`{"epoch": 6, "give_up": %q, "give_up_mono_ns": %d, "boot_id": "boot-1"}`,
				time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano), mono+int64(time.Hour))
		},
	}
	if _, ok := bootNow(); ok {
		recs["CLOCK_BOOTTIME"] = func() string {
			mono, _ := monoNow()
			boot, _ := bootNow()
			return fmt.Sprintf(`{"epoch": 6, "give_up": %q, "give_up_mono_ns": %d, "give_up_boot_ns": %d, "boot_id": "boot-1"}`,
				time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano), mono+int64(time.Hour), boot+int64(time.Second))
		}
	}
	for name, rec := range recs {
		t.Run(name, func(t *testing.T) {
			d, _ := promoteDaemon(t, &fakePromotion{finish: false}, &epochClient{epoch: 6, primary: "pg-a2"})
			d.bootIDPath = filepath.Join(t.TempDir(), "boot_id")
			if err := os.WriteFile(d.bootIDPath, []byte("boot-1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := os.WriteFile(d.promotePendingPath(), []byte(rec()), 0o600); err != nil {
				t.Fatal(err)
			}
			d.resumePendingPromotion()
			if reason := waitFenced(t, d, 10*time.Second); !strings.Contains(reason, "settle deadline") {
				t.Fatalf("fenced for %q", reason)
			}
			if took := time.Since(start); took < 500*time.Millisecond {
				t.Fatalf("fenced after %s, before the give-up time (1s)", took)
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
	hb := WatchdogHeartbeat{RemainingMs: 60_000, GraceMs: 250, Epoch: 6,
		GiveUpWallNs: t0.Add(60 * time.Second).UnixNano(), GiveUpBootNs: boot0 + int64(60*time.Second)}
	var w WatchdogTimer
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
	if wait, ok := w.Wait(at(time.Second, time.Second, time.Second)); !ok || wait > watchdogPoll {
		t.Errorf("wait %s while holding a give-up time on other clocks, want at most %s", wait, watchdogPoll)
	}
	w.Beat(t0.Add(2*time.Second), WatchdogHeartbeat{RemainingMs: 5000}, 0) // a lease's deadline only
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
	mono, _ := monoNow()
	b, _ := json.Marshal(WatchdogHeartbeat{RemainingMs: 60_000, MonoNs: mono, Epoch: 6, GiveUpWallNs: time.Now().Add(300 * time.Millisecond).UnixNano()})
	start := time.Now()
	_, done, _, _ := watchdogRun(t, cfg, string(b))
	if c := wait(t, done, 10*time.Second); c != 0 {
		t.Fatalf("exit %d", c)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("fenced after %s, before the give-up time", took)
	}
	if fi, err := health.ReadFenced(cfg.Postgres.PGData); err != nil || fi == nil || !strings.HasPrefix(fi.Reason, WatchdogReason) {
		t.Fatalf("marker %+v %v", fi, err)
	}
}
