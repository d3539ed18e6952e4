package pgctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PIDFile is the name of the file a running postmaster keeps in its data
// directory. Its lines: pid, data directory, start time, port, socket
// directory, listen address, shared memory key, status.
const PIDFile = "postmaster.pid"

// ParsePID returns the process id on postmaster.pid's first line. A
// missing, non-numeric or non-positive id is an error (a negative one
// belongs to a standalone backend, which pgdr never signals).
func ParsePID(b []byte) (int, error) {
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: bad process id %q", first)
	}
	return pid, nil
}

// ParseAddress returns the port and unix socket directory postmaster.pid
// names (lines 4 and 5); ok is false until the postmaster has written them.
func ParseAddress(b []byte) (port int, socketDir string, ok bool) {
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 {
		return 0, "", false
	}
	port, _ = strconv.Atoi(lines[3])
	if port <= 0 {
		return 0, "", false
	}
	return port, lines[4], true
}

// ReadPID reads pgdata's postmaster.pid and returns the process id it
// names. A missing file's error satisfies errors.Is(err, os.ErrNotExist).
func ReadPID(pgdata string) (int, error) {
	b, err := os.ReadFile(filepath.Join(pgdata, PIDFile))
	if err != nil {
		return 0, err
	}
	return ParsePID(b)
}

// ProcessAlive reports whether a process with id pid exists (EPERM means
// it exists but belongs to another user).
func ProcessAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// PostmasterRunning reports whether pgdata's postmaster.pid names a live
// process.
func PostmasterRunning(pgdata string) bool {
	pid, err := ReadPID(pgdata)
	return err == nil && ProcessAlive(pid)
}
