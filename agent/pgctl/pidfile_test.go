package pgctl

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestParsePID: the postmaster's process id is postmaster.pid's first
// line; anything else there is not a process to signal or wait for.
func TestParsePID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		pid     int
		wantErr string
	}{
		{"a running server's file", "4242\n/var/lib/postgresql/15/main\n1733570000\n5432\n/var/run/postgresql\n*\n  5432001         0\nready   \n", 4242, ""},
		{"first line alone, no newline", "17", 17, ""},
		{"spaces around the number", "  99 \n/data\n", 99, ""},
		{"a negative pid (a standalone backend's file)", "-4242\n/data\n", 0, `postmaster.pid: bad process id "-4242"`},
		{"zero", "0\n", 0, `postmaster.pid: bad process id "0"`},
		{"empty file (being written)", "", 0, `postmaster.pid: bad process id ""`},
		{"not a number", "abc\n", 0, `postmaster.pid: bad process id "abc"`},
	} {
		pid, err := ParsePID([]byte(tc.file))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		case pid != tc.pid:
			t.Errorf("%s: pid %d, want %d", tc.name, pid, tc.pid)
		}
	}
}

// TestParseAddress: the port and socket directory are lines 4 and 5 of
// postmaster.pid, written a moment after the first lines; until then the
// file names no address.
func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		name   string
		file   string
		port   int
		socket string
		ok     bool
	}{
		{"complete", "4242\n/data\n1733570000\n5433\n/tmp\n*\n", 5433, "/tmp", true},
		{"no socket directory configured", "4242\n/data\n1733570000\n5433\n\n", 5433, "", true},
		{"port not written yet", "4242\n/data\n1733570000\n", 0, "", false},
		{"port line empty", "4242\n/data\n1733570000\n\n/tmp\n", 0, "", false},
		{"empty", "", 0, "", false},
	} {
		port, socket, ok := ParseAddress([]byte(tc.file))
		if port != tc.port || socket != tc.socket || ok != tc.ok {
			t.Errorf("%s: (%d, %q, %v), want (%d, %q, %v)", tc.name, port, socket, ok, tc.port, tc.socket, tc.ok)
		}
	}
}

// TestPostmasterRunning: a file naming this (live) process counts as
// running; a missing file, a bad one, or one naming a process that has
// exited does not.
func TestPostmasterRunning(t *testing.T) {
	dir := t.TempDir()
	if PostmasterRunning(dir) {
		t.Fatal("running without a postmaster.pid")
	}
	if _, err := ReadPID(dir); !os.IsNotExist(err) {
		t.Fatalf("ReadPID without a file: %v, want a not-exist error", err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(strconv.Itoa(os.Getpid()) + "\n" + dir + "\n")
	if !PostmasterRunning(dir) {
		t.Fatal("a file naming a live process is not running")
	}
	write("garbage\n")
	if PostmasterRunning(dir) {
		t.Fatal("a bad file counts as running")
	}
	if _, err := ReadPID(dir); err == nil || !strings.Contains(err.Error(), "bad process id") {
		t.Fatalf("ReadPID of a bad file: %v", err)
	}
	// The largest pid Linux hands out is below 1<<22: nothing lives there.
	write(strconv.Itoa(1<<22+1) + "\n")
	if PostmasterRunning(dir) {
		t.Fatal("a stale file counts as running")
	}
}
