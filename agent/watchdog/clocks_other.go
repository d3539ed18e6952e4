//go:build !linux

package watchdog

// MonoNow has no shared monotonic clock to read outside Linux: the
// watchdog then counts remaining_ms from its receipt of the heartbeat.
func MonoNow() (ns int64, ok bool) { return 0, false }

// BootNow: no CLOCK_BOOTTIME outside Linux (the wall clock still counts).
func BootNow() (ns int64, ok bool) { return 0, false }
