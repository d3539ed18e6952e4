package s3server

import "syscall"

// procAttr puts the server in its own process group (so Stop can kill
// anything it spawned) and asks the kernel to SIGKILL it if the test binary
// dies without running its cleanups (a panic, a test timeout, a signal).
//
// Pdeathsig fires when the creating OS thread exits, not the process; Go
// only retires threads of goroutines that exit while locked to them, which
// nothing in a test that calls Start does, so it is reliable here.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
