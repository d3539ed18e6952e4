package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/watchdog"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// watchdogLines are the fake leader's configuration lines (lease_test.go)
// with failover.watchdog on explicitly.
func watchdogLines(t *testing.T, f *fakeLeader, listen string) string {
	t.Helper()
	s := f.configLines(listen)
	old := fmt.Sprintf("safety_margin: %s}", leaseMargin)
	if !strings.Contains(s, old) {
		t.Fatalf("no %q in the fake leader's configuration lines:\n%s", old, s)
	}
	return strings.Replace(s, old, fmt.Sprintf("safety_margin: %s, watchdog: true}", leaseMargin), 1)
}

// agentProc is a `pgdr-agent run` started by startDaemonProc.
type agentProc struct {
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
	done chan struct{}
	sock string
}

// startDaemonProc is startDaemon (harness_test.go) keeping the process, so
// a test can signal it.
func startDaemonProc(t *testing.T, l *lab, cfg string) *agentProc {
	t.Helper()
	p := &agentProc{cmd: exec.Command(agentPath(t), "run", "--config", cfg), log: &testutil.SyncBuffer{}, done: make(chan struct{}),
		sock: filepath.Join(l.dir, "agent-"+filepath.Base(cfg)+".sock")}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if cred := pgtest.Credential(t); cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait returns once the agent AND its watchdog (which shares the
	// agent's stderr) have exited.
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			if pid := p.watchdogPID(); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			<-p.done
		}
	})
	testutil.WaitFor(t, 30*time.Second, "the agent daemon's socket", func() (bool, error) {
		_, err := os.Stat(p.sock)
		return err == nil, err
	})
	return p
}

// watchdogPID is the pid of the agent's watchdog process (0: none yet).
func (p *agentProc) watchdogPID() int {
	b, err := os.ReadFile(p.sock + ".watchdog.pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && err != syscall.EPERM {
		return false
	}
	// A zombie (exited, not yet reaped) is not alive.
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
		return false
	}
	return true
}

// TestWatchdogFencesStalledAgent: the primary's agent holds the lease
// with the watchdog on; SIGSTOP freezes the agent (its own deadline can
// no longer fire) while the leader keeps answering. The watchdog process
// stops PostgreSQL within the TTL, before the leader's expiry of the
// lease (last granted renewal received + TTL), and leaves the marker with
// its reason.
func TestWatchdogFencesStalledAgent(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE lease_probe(t timestamptz)")
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := l.writeConfig(t, "wd-primary.yaml", []string{"file"}, l.identity, 0)
	appendFile(t, cfg, watchdogLines(t, f, addr))
	a := startDaemonProc(t, l, cfg)
	waitProbes(t, 30*time.Second, addr, 200, "/primary")
	f.waitGrants(t)
	testutil.WaitFor(t, 10*time.Second, "the watchdog guarding the primary", func() (bool, error) {
		return alive(a.watchdogPID()) && strings.Contains(a.log.String(), "guarding the primary"), fmt.Errorf("watchdog pid %d; log:\n%s", a.watchdogPID(), tail(a.log.String(), 1500))
	})
	wdPID := a.watchdogPID()

	stopWrites := recordLastWrite(t, l.pg.DSN())

	stalled := time.Now()
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(a.cmd.Process.Pid, syscall.SIGCONT)
	testutil.WaitFor(t, leaseTTL, "the watchdog to stop PostgreSQL", func() (bool, error) {
		if postmasterPIDExists(l.pg.PGData) {
			return false, fmt.Errorf("PostgreSQL still runs; log:\n%s", tail(a.log.String(), 1500))
		}
		return true, nil
	})
	fencedAfter := time.Since(stalled)
	lw := stopWrites()
	lastGrant, _ := f.grantState()
	t.Logf("the watchdog fenced %s after the agent was stopped; last write %s after the last grant was received (leader expiry at %s, agent deadline at %s)",
		fencedAfter.Round(time.Millisecond), lw.Sub(lastGrant).Round(time.Millisecond), leaseTTL, leaseTTL-leaseMargin)
	if !lw.Before(lastGrant.Add(leaseTTL)) {
		t.Errorf("a write was accepted %s after the last grant was received, at or past the leader's expiry (%s)", lw.Sub(lastGrant), leaseTTL)
	}
	// The agent's deadline is at most ttl - margin after the stall; the
	// watchdog acts at that deadline plus its grace (margin/4). Its decision
	// is timed by its own log line, so pg_ctl's fork/exec and the test's
	// polling are not counted; what is allowed beyond the deadline is the
	// wake-up of a timer on a loaded machine.
	decided := watchdogDecision(t, a.log.String())
	const timerWakeup = 250 * time.Millisecond
	if limit := leaseTTL - leaseMargin + leaseMargin/4 + timerWakeup; decided.Sub(stalled) > limit {
		t.Errorf("the watchdog decided to fence %s after the stall, later than the agent's deadline + grace allow (%s)", decided.Sub(stalled), limit)
	}
	if err := writable(l.pg.DSN()); err == nil {
		t.Fatal("the fenced server still takes writes")
	}
	// The agent is still stopped: the marker is the watchdog's (written
	// right after pg_ctl returns).
	var fi *health.FenceInfo
	var err error
	testutil.WaitFor(t, 2*time.Second, "the watchdog's marker", func() (bool, error) {
		fi, err = health.ReadFenced(l.pg.PGData)
		return fi != nil, err
	})
	if err != nil || fi == nil || !strings.HasPrefix(fi.Reason, watchdog.Reason) || fi.Node != "pg-a1" || fi.Epoch != 1 {
		t.Fatalf("fenced marker: %+v %v", fi, err)
	}
	t.Logf("marker: %q", fi.Reason)
	if log := a.log.String(); !strings.Contains(log, "WATCHDOG FENCING") {
		t.Errorf("no watchdog fencing log:\n%s", tail(log, 2000))
	}
	testutil.WaitFor(t, 5*time.Second, "the watchdog to exit after fencing", func() (bool, error) {
		return !alive(wdPID), fmt.Errorf("watchdog %d still runs", wdPID)
	})

	// Resumed, the agent finds its lease expired and the node fenced; its
	// new watchdog has nothing to guard.
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the resumed agent to report fenced", func() (bool, error) {
		p, err := getProbe(addr, "/health")
		return err == nil && p.body.Role == "fenced", fmt.Errorf("%v %s", err, p.raw)
	})
	waitProbes(t, 5*time.Second, addr, 503, "/primary")
	if postmasterPIDExists(l.pg.PGData) {
		t.Fatal("PostgreSQL runs again")
	}
}

// TestWatchdogSparesReplica: with the watchdog on, a replica's agent
// stopped (SIGSTOP) for twice the TTL does not get its server fenced: the
// watchdog has nothing to guard on a server in recovery. When the agent
// exits, its watchdog exits too.
func TestWatchdogSparesReplica(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	sb := newReplica(t, l, 1)
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := l.writeNodeConfig(t, "wd-replica.yaml", sb, []string{"file"})
	appendFile(t, cfg, watchdogLines(t, f, addr))
	a := startDaemonProc(t, l, cfg)
	waitProbes(t, 30*time.Second, addr, 200, "/replica")
	testutil.WaitFor(t, 10*time.Second, "the watchdog process", func() (bool, error) {
		return alive(a.watchdogPID()), fmt.Errorf("watchdog pid %d; log:\n%s", a.watchdogPID(), tail(a.log.String(), 1500))
	})
	wdPID := a.watchdogPID()
	time.Sleep(2 * leaseLoop) // a few heartbeats

	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * leaseTTL)
	if !alive(wdPID) {
		t.Errorf("the watchdog exited while the agent was stopped; log:\n%s", tail(a.log.String(), 1500))
	}
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !postmasterPIDExists(sb.PGData) {
		t.Fatalf("the replica was stopped; log:\n%s", tail(a.log.String(), 2000))
	}
	if got := sb.QueryString(t, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("in recovery: %s", got)
	}
	if fi, _ := health.ReadFenced(sb.PGData); fi != nil {
		t.Fatalf("the replica is fenced: %+v", fi)
	}
	if log := a.log.String(); strings.Contains(log, "WATCHDOG FENCING") || strings.Contains(log, "guarding the primary") {
		t.Fatalf("the watchdog guarded a replica:\n%s", tail(log, 2000))
	}
	waitProbes(t, 10*time.Second, addr, 200, "/replica")

	// The agent stops: its watchdog, guarding nothing, exits with it.
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done: // the watchdog shared the agent's stderr: it is gone too
	case <-time.After(15 * time.Second):
		t.Fatalf("the agent or its watchdog (%d alive %v) did not exit; log:\n%s", wdPID, alive(wdPID), tail(a.log.String(), 1500))
	}
	if !postmasterPIDExists(sb.PGData) {
		t.Fatal("the replica was stopped")
	}
}

func postmasterPIDExists(pgdata string) bool {
	_, err := os.Stat(filepath.Join(pgdata, "postmaster.pid"))
	return err == nil
}

// watchdogDecision returns the time the watchdog logged its fencing
// decision (slog's time= field of the "WATCHDOG FENCING" line).
func watchdogDecision(t *testing.T, log string) time.Time {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "WATCHDOG FENCING") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				at, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					t.Fatalf("watchdog log line %q: time: %v", line, err)
				}
				return at
			}
		}
		t.Fatalf("watchdog log line without time=: %q", line)
	}
	t.Fatalf("no WATCHDOG FENCING line in the log:\n%s", tail(log, 2000))
	return time.Time{}
}
