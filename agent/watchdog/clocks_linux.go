package watchdog

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MonoNow reads CLOCK_MONOTONIC, the one clock the daemon and its watchdog
// process share (system-wide, never stepped; the child inherits the
// daemon's time namespace). ok is false when it cannot be read.
func MonoNow() (ns int64, ok bool) {
	var ts syscall.Timespec
	const clockMonotonic = 1
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return ts.Nano(), true
}

// BootNow reads CLOCK_BOOTTIME: CLOCK_MONOTONIC plus the time the system
// was suspended. ok is false when it cannot be read.
func BootNow() (ns int64, ok bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, false
	}
	return ts.Nano(), true
}
