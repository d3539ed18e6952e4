package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that is free now, chosen below
// Linux's ephemeral range (32768+) so that a server restarted on it does not
// find it taken by an outgoing connection.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 200; i++ {
		p := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free TCP port found in 20000-32000")
	return 0
}

// RepoRoot returns the module root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above " + file)
		}
		dir = parent
	}
}

// Builder builds a pgdr binary once per test process.
type Builder struct {
	once sync.Once
	path string
	err  error
}

// Build compiles ./agent/cmd/<name> (or the given package) into a
// world-readable temporary directory so that processes running as the
// postgres user can execute it, and returns its path.
func (b *Builder) Build(t testing.TB, pkg, name string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "pgdr-bin-")
		if err != nil {
			b.err = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// WaitFor polls cond every interval until it returns true or the deadline
// passes, in which case the test fails with msg and the last error.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, msg, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Trim shortens command output for failure messages.
func Trim(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 4000 {
		s = s[:2000] + "\n...\n" + s[len(s)-2000:]
	}
	return s
}

// Promtool returns the path of promtool: $PGDR_PROMTOOL, then PATH, then
// /usr/local/bin where scripts/ci-deps.sh extracts it from Debian's
// prometheus package. Missing, the test fails, in CI and in `make test`
// alike; only a -short run outside CI (CI unset) skips.
func Promtool(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PGDR_PROMTOOL"); p != "" {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/local/bin/promtool"); err == nil {
		return "/usr/local/bin/promtool"
	}
	const msg = "promtool is not installed (scripts/ci-deps.sh extracts it from Debian's prometheus package)"
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip(msg)
	}
	t.Fatal(msg)
	return ""
}

// ProcessTree is pid and every process below it (children, their
// children, ...), read from /proc by parent pid: what a test stops or
// resumes as one node (a postmaster and its backends, an agent and its
// watchdog).
func ProcessTree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state ppid ...
		if len(f) > 1 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				children[pp] = append(children[pp], p)
			}
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
