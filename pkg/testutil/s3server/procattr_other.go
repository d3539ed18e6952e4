//go:build unix && !linux

package s3server

import "syscall"

// procAttr puts the server in its own process group. Without Linux's
// parent-death signal, only Stop (via t.Cleanup) ends it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
