//go:build !linux

package daemon

// monoNow has no shared monotonic clock to read outside Linux: the
// watchdog then counts remaining_ms from its receipt of the heartbeat.
func monoNow() (ns int64, ok bool) { return 0, false }

// bootNow: no CLOCK_BOOTTIME outside Linux (the wall clock still counts).
func bootNow() (ns int64, ok bool) { return 0, false }
