package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/watchdog"
)

// The tests of issue 12's paused-VM finding on the pending promotion
// watcher's side (the watchdog's and the guard's are agent/watchdog's):
// CLOCK_MONOTONIC stands still while the hypervisor pauses the guest (or
// the host is suspended), so a give-up time counted on it alone comes late
// after the pause, while the leader, whose clock kept running, already
// counts the promotion as settled. The wall clock (set right once the
// guest resumes) and CLOCK_BOOTTIME (which counts a suspension) make it
// pass on time: the earliest of the three counts.

// jumpedClocks returns a clock reading for d.clocks that, once jump is
// set, reads the wall clock (wall) or CLOCK_BOOTTIME (!wall) ahead by
// ahead while the monotonic clock (Now) runs as ever: a resumed guest.
func jumpedClocks(jump *atomic.Bool, wall bool, ahead time.Duration) func() watchdog.Clocks {
	return func() watchdog.Clocks {
		c := watchdog.ReadClocks()
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
	if _, ok := watchdog.BootNow(); ok {
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
			if hb, _ := d.wd.Heartbeat(); hb.RemainingMs < 30_000 {
				t.Fatalf("heartbeat before the pause %+v, want about %s left", hb, window-margin(d))
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

// TestPromoteWatchResumedEarliestClock: a guard resumed from pgdata after
// an agent restart gives up at the earliest of its recorded times: the
// wall clock's give_up (written by older agents too) or give_up_boot_ns
// when either is earlier than the monotonic one.
func TestPromoteWatchResumedEarliestClock(t *testing.T) {
	if _, ok := watchdog.MonoNow(); !ok {
		t.Skip("no CLOCK_MONOTONIC on this platform")
	}
	// Each record is written right before it is resumed: the give-up time
	// is a second later on one clock, an hour on the others.
	recs := map[string]func() string{
		"wall clock": func() string {
			mono, _ := watchdog.MonoNow()
			return fmt.Sprintf(`{"epoch": 6, "give_up": %q, "give_up_mono_ns": %d, "boot_id": "boot-1"}`,
				time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano), mono+int64(time.Hour))
		},
	}
	if _, ok := watchdog.BootNow(); ok {
		recs["CLOCK_BOOTTIME"] = func() string {
			mono, _ := watchdog.MonoNow()
			boot, _ := watchdog.BootNow()
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
			if err := os.WriteFile(d.guard.Path(), []byte(rec()), 0o600); err != nil {
				t.Fatal(err)
			}
			d.resumePendingPromotion(t.Context())
			if reason := waitFenced(t, d, 10*time.Second); !strings.Contains(reason, "settle deadline") {
				t.Fatalf("fenced for %q", reason)
			}
			if took := time.Since(start); took < 500*time.Millisecond {
				t.Fatalf("fenced after %s, before the give-up time (1s)", took)
			}
		})
	}
}
