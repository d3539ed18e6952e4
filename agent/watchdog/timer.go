package watchdog

import "time"

// Reason starts the reason the watchdog writes into the marker.
const Reason = "watchdog: agent stalled"

// Heartbeat is one line the daemon writes to its watchdog.
type Heartbeat struct {
	// RemainingMs is how long until the daemon's fencing deadline
	// (rounded down); 0: nothing to guard; < 0: the deadline has passed.
	RemainingMs int64 `json:"remaining_ms"`
	// GraceMs is added to the deadline so that a running agent fences
	// first (see the package documentation).
	GraceMs int64 `json:"grace_ms,omitempty"`
	// MonoNs is CLOCK_MONOTONIC read before RemainingMs was measured (0:
	// not available).
	MonoNs int64 `json:"mono_ns,omitempty"`
	// Epoch is the highest epoch the daemon knows (for the marker).
	Epoch uint64 `json:"epoch,omitempty"`
	// GiveUpWallNs and GiveUpBootNs are a guarded promotion's give-up
	// time (guard.go) on the wall clock (Unix ns) and on
	// CLOCK_BOOTTIME (0: none), which the deadline above already counts
	// at the heartbeat's sending. The child fences when either clock
	// reaches it (plus the grace), even before its monotonic deadline:
	// its timer runs on CLOCK_MONOTONIC, which stood still while the VM
	// was paused or the host suspended.
	GiveUpWallNs int64 `json:"give_up_wall_ns,omitempty"`
	GiveUpBootNs int64 `json:"give_up_boot_ns,omitempty"`
}

// poll bounds the child's sleep while it holds a give-up time on
// the wall clock or CLOCK_BOOTTIME: a timer runs on CLOCK_MONOTONIC, so a
// paused VM's resumption would otherwise be noticed only once that clock
// reached the deadline.
const poll = 100 * time.Millisecond

// Timer is the watchdog's deadline logic, a pure type: every
// method takes the time from the caller (the child's clocks, or fake ones
// in tests).
type Timer struct {
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
func (w *Timer) Beat(now time.Time, hb Heartbeat, age time.Duration) {
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
func (w *Timer) Armed() bool { return w.armed }

// Deadline is when the watchdog fences (zero when not armed).
func (w *Timer) Deadline() time.Time { return w.deadline }

// Epoch is the highest epoch any heartbeat carried.
func (w *Timer) Epoch() uint64 { return w.epoch }

// Beats counts the heartbeats applied.
func (w *Timer) Beats() int { return w.beats }

// Due reports whether the watchdog must fence at c: its deadline has
// passed on c.Now's monotonic clock, or a guarded promotion's give-up
// time on the wall clock or CLOCK_BOOTTIME.
func (w *Timer) Due(c Clocks) bool { return w.armed && w.left(c) <= 0 }

// left is the time left at c, the least on any clock.
func (w *Timer) left(c Clocks) time.Duration {
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
// not armed): until the deadline, at most poll while a give-up
// time on the wall clock or CLOCK_BOOTTIME is held.
func (w *Timer) Wait(c Clocks) (time.Duration, bool) {
	if !w.armed {
		return 0, false
	}
	l := max(w.left(c), 0)
	if !w.wall.IsZero() || w.boot != 0 {
		l = min(l, poll)
	}
	return l, true
}
