package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// Bounds of the rolling upgrade (TestRollingUpgrade).
const (
	// upgradeLeaderlessBound: the longest time without a Raft leader while
	// the leader restarts (an election; the lab's lease_ttl is 5 s and the
	// primary keeps its lease only if a leader is back well within it).
	upgradeLeaderlessBound = 15 * time.Second
	// upgradeWriteGapBound: the longest time between two acknowledged
	// writes on the primary (one every 200 ms; PostgreSQL never restarts).
	upgradeWriteGapBound = 3 * time.Second
	// upgradeMonitorBound ends the monitor whatever happens.
	upgradeMonitorBound = 5 * time.Minute
)

var buildInfoVersion = regexp.MustCompile(`(?m)^pgdr_build_info\{[^}]*\bversion="([^"]*)"`)

// buildUpgrade builds the three binaries again with the version set to
// version (as `make dist` sets it) into a directory the postgres user can
// read, and returns the directory.
func buildUpgrade(t *testing.T, version string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgdr-upgrade-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"-ldflags", "-X github.com/pgdr/pgdr/pkg/buildinfo.Version="+version,
		"./agent/cmd/pgdr-agent", "./coordinator/cmd/pgdr-coordinator", "./coordinator/cmd/pgdrctl")
	cmd.Dir = testutil.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the new version: %v\n%s", err, out)
	}
	return dir
}

// runningVersion is the version in the target's pgdr_build_info.
func runningVersion(tg labScrapeTarget) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, _, err := tg.scrape(ctx)
	if err != nil {
		return "", err
	}
	m := buildInfoVersion.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s serves no pgdr_build_info", tg.name)
	}
	return string(m[1]), nil
}

// coordHealth is a coordinator's /health.
type coordHealth struct {
	RaftState    string `json:"raft_state"`
	Leader       string `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
}

func (tg labScrapeTarget) health(d time.Duration) (coordHealth, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var h coordHealth
	b, _, err := tg.fetch(ctx, "/health")
	if err != nil {
		return h, err
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("%s /health: %w: %s", tg.name, err, b)
	}
	return h, nil
}

// upgradeMonitor polls, every 200 ms, every coordinator's /health for a
// leader, and every fourth round `pgdrctl status` for the main cluster's
// primary and epoch.
type upgradeMonitor struct {
	l         *lab
	coords    []labScrapeTarget
	epoch     uint64
	stop      chan struct{}
	done      chan struct{}
	mu        sync.Mutex
	noLeader  time.Time       // start of the current leaderless stretch (zero: a leader)
	longest   time.Duration   // the longest leaderless stretch
	stretches []time.Duration // every leaderless stretch
	changes   []string        // primary or epoch other than the first seen
	statusOK  int
	rounds    int
	expired   bool
}

func startUpgradeMonitor(l *lab, coords []labScrapeTarget, epoch uint64) *upgradeMonitor {
	m := &upgradeMonitor{l: l, coords: coords, epoch: epoch, stop: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	return m
}

func (m *upgradeMonitor) run() {
	defer close(m.done)
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	deadline := time.Now().Add(upgradeMonitorBound)
	for round := 0; ; round++ {
		select {
		case <-m.stop:
			m.leaderSeen(true, time.Now())
			return
		case <-tk.C:
		}
		if time.Now().After(deadline) {
			m.mu.Lock()
			m.expired = true
			m.mu.Unlock()
			return
		}
		leader := make(chan bool, len(m.coords))
		for _, tg := range m.coords {
			go func() {
				h, err := tg.health(time.Second)
				leader <- err == nil && h.RaftState == "Leader"
			}()
		}
		any := false
		for range m.coords {
			any = <-leader || any
		}
		m.leaderSeen(any, time.Now())
		if round%4 != 0 {
			continue
		}
		out, err := m.l.ctl("status", "--json", "--timeout", "2s")
		var v ctl.StatusJSON
		if err != nil || json.Unmarshal(out, &v) != nil {
			continue // no leader to answer, or a coordinator restarting
		}
		c, ok := labCluster(v, "main")
		m.mu.Lock()
		m.statusOK++
		m.rounds = round
		if !ok || c.Primary != "pg-a1" || c.Epoch != m.epoch {
			m.changes = append(m.changes, fmt.Sprintf("%s: primary %q epoch %d (failover: %s)", time.Now().Format("15:04:05.000"), c.Primary, c.Epoch, c.Failover))
		}
		m.mu.Unlock()
	}
}

func (m *upgradeMonitor) leaderSeen(leader bool, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !leader && m.noLeader.IsZero():
		m.noLeader = at
	case leader && !m.noLeader.IsZero():
		d := at.Sub(m.noLeader)
		m.stretches = append(m.stretches, d)
		m.longest = max(m.longest, d)
		m.noLeader = time.Time{}
	}
}

// check fails the test when the current leaderless stretch is already
// longer than the bound, or the primary or its epoch changed.
func (m *upgradeMonitor) check(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.noLeader.IsZero() && time.Since(m.noLeader) > upgradeLeaderlessBound {
		t.Fatalf("no coordinator has been the leader for %s (bound %s)", time.Since(m.noLeader).Round(time.Millisecond), upgradeLeaderlessBound)
	}
	if len(m.changes) > 0 {
		t.Fatalf("the primary or its epoch changed during the upgrade: %v", m.changes)
	}
}

func (m *upgradeMonitor) finish() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// longestWriteGap is the longest time between two acknowledged writes of
// node in [from, to), counting from from and to to.
func longestWriteGap(ok []time.Time, from, to time.Time) time.Duration {
	prev, gap := from, time.Duration(0)
	for _, at := range append(ok, to) {
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return gap
}

// TestRollingUpgrade (issue 20): the lab's binaries are replaced by a new
// build (another version) as a package upgrade replaces them, then every
// process is restarted on it one at a time, as docs/deploy.md says:
// coordinators followers first and the leader last, then agents replicas
// first and the primary's last. Throughout, a leader is back within
// upgradeLeaderlessBound of any election, pg-a1 stays the primary at the
// same epoch (no failover), and writes on it go on with no gap longer than
// upgradeWriteGapBound, directly and through HAProxy running the shipped
// deploy/haproxy/haproxy.cfg (which never marks pg-a1 down: an agent
// restart leaves PostgreSQL serving). Each process is back (a caught-up
// voter; a healthy member, the primary with its lease) on the new version
// before the next one is restarted, and at the end all six run the new
// version and no process of the old executables (a watchdog child) is
// left.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real lab (PostgreSQL 15, 3 coordinators, 3 agents)")
	}
	l := startLab(t)
	epoch := l.wantPrimary(t, "pg-a1")
	newVersion := fmt.Sprintf("upgrade-test-%d", time.Now().UnixNano())
	newBin := buildUpgrade(t, newVersion)

	targets := labScrapeTargets(t, l)
	byName := map[string]labScrapeTarget{}
	for _, tg := range targets {
		byName[strings.Fields(tg.name)[1]] = tg
		v, err := runningVersion(tg)
		if err != nil {
			t.Fatal(err)
		}
		if v == newVersion {
			t.Fatalf("%s already runs %s before the upgrade", tg.name, v)
		}
	}
	coords := targets[:3]
	hap := startLabHAProxy(t, l)
	hap.waitRouting(t, "pg-a1")
	_, downBefore, err := hap.server("pg-a1")
	if err != nil {
		t.Fatal(err)
	}

	w := startWriteLog(t, l, "pg-a1")
	defer w.finish()
	pw := startProxyWriter(t, l, hap.primary)
	defer pw.finish()
	mon := startUpgradeMonitor(l, coords, epoch)
	defer mon.finish()
	started := time.Now()
	time.Sleep(time.Second)

	if out, err := l.labScript(t.Context(), "install-bins", newBin); err != nil {
		t.Fatalf("lab.sh install-bins: %v\n%s", err, out)
	}

	// --- coordinators: followers first, the leader last -------------------
	v, _, err := l.status()
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	leader := ""
	for _, c := range v.Coordinators {
		if c.Leader {
			leader = c.Name
		} else {
			order = append(order, c.Name)
		}
	}
	if leader == "" {
		t.Fatalf("no leader among %+v", v.Coordinators)
	}
	order = append(order, leader)
	for _, c := range order {
		tg := byName[c]
		before, err := tg.health(5 * time.Second)
		if err != nil {
			t.Fatalf("%s before its restart: %v", c, err)
		}
		step := time.Now()
		out, err := l.labScript(t.Context(), "restart-coordinator", c)
		if err != nil || strings.Contains(out, "SIGKILL") {
			t.Fatalf("lab.sh restart-coordinator %s (graceful stop wanted): %v\n%s", c, err, out)
		}
		testutil.WaitFor(t, 60*time.Second, c+" back on "+newVersion+", a caught-up voter with a leader", func() (bool, error) {
			mon.check(t)
			h, err := tg.health(2 * time.Second)
			if err != nil {
				return false, err
			}
			if h.Leader == "" || (h.RaftState != "Follower" && h.RaftState != "Leader") || h.AppliedIndex < before.AppliedIndex {
				return false, fmt.Errorf("%s: %+v (applied index before the restart %d)", c, h, before.AppliedIndex)
			}
			if ver, err := runningVersion(tg); err != nil || ver != newVersion {
				return false, fmt.Errorf("%s runs %q (%v)", c, ver, err)
			}
			out, err := l.ctl("coordinator", "list", "--json")
			if err != nil {
				return false, err
			}
			var list ctl.CoordinatorsJSON
			if err := json.Unmarshal(out, &list); err != nil {
				return false, fmt.Errorf("coordinator list --json: %w\n%s", err, out)
			}
			for _, e := range list.Coordinators {
				if e.Name == c {
					return e.Voter, fmt.Errorf("%s is not a voter: %+v", c, e)
				}
			}
			return false, fmt.Errorf("%s is not in coordinator list: %+v", c, list.Coordinators)
		})
		t.Logf("coordinator %s (leader before: %v) back on %s after %s", c, c == leader, newVersion, time.Since(step).Round(time.Millisecond))
	}

	// --- agents: replicas first, the primary's last -----------------------
	for _, n := range []string{"pg-a2", "pg-b1", "pg-a1"} {
		tg := byName[n]
		step := time.Now()
		out, err := l.labScript(t.Context(), "restart-agent", n)
		if err != nil || strings.Contains(out, "SIGKILL") {
			t.Fatalf("lab.sh restart-agent %s (graceful stop wanted): %v\n%s", n, err, out)
		}
		want := "replica"
		if n == "pg-a1" {
			want = "primary"
		}
		testutil.WaitFor(t, 60*time.Second, n+" back on "+newVersion+", a healthy "+want, func() (bool, error) {
			mon.check(t)
			if ver, err := runningVersion(tg); err != nil || ver != newVersion {
				return false, fmt.Errorf("%s runs %q (%v)", n, ver, err)
			}
			c, err := l.clusterNow()
			if err != nil {
				return false, err
			}
			m, _ := labMember(c, n)
			if m.Role != want || !m.Healthy || m.LastReportAgeSeconds < 0 || m.LastReportAgeSeconds > 3 {
				return false, fmt.Errorf("%s: role %s healthy %v report age %.1fs problems %v", n, m.Role, m.Healthy, m.LastReportAgeSeconds, m.Problems)
			}
			if n == "pg-a1" {
				if code, body := l.primaryProbe(n); code != 200 {
					return false, fmt.Errorf("/primary on pg-a1: %d %s", code, body)
				}
				exp, err := time.Parse(time.RFC3339Nano, c.LeaseExpiresAt)
				if err != nil || !exp.After(time.Now()) {
					return false, fmt.Errorf("lease_expires_at %q", c.LeaseExpiresAt)
				}
			}
			return true, nil
		})
		t.Logf("agent %s back on %s as a healthy %s after %s", n, newVersion, want, time.Since(step).Round(time.Millisecond))
	}
	// Writes and status a little longer, past a lease TTL after the last
	// restart.
	time.Sleep(6 * time.Second)
	mon.check(t)
	mon.finish()
	w.finish()
	pw.finish()
	ended := time.Now()

	// --- what held throughout ---------------------------------------------
	mon.mu.Lock()
	t.Logf("monitor: %d status answers, leaderless stretches %v (longest %s, bound %s)", mon.statusOK, mon.stretches, mon.longest.Round(time.Millisecond), upgradeLeaderlessBound)
	if mon.expired {
		t.Errorf("the monitor ran out of its %s bound", upgradeMonitorBound)
	}
	if mon.longest > upgradeLeaderlessBound {
		t.Errorf("no leader for %s, beyond %s", mon.longest.Round(time.Millisecond), upgradeLeaderlessBound)
	}
	if len(mon.changes) > 0 {
		t.Errorf("the primary or its epoch changed: %v", mon.changes)
	}
	if mon.statusOK < 10 {
		t.Errorf("only %d status answers during the upgrade", mon.statusOK)
	}
	mon.mu.Unlock()
	ok, fail := w.between("pg-a1", started, ended)
	gap := longestWriteGap(ok, started, ended)
	t.Logf("writes on pg-a1 over %s: %d acknowledged, %d failed, longest gap between two %s (bound %s)",
		ended.Sub(started).Round(time.Millisecond), len(ok), len(fail), gap.Round(time.Millisecond), upgradeWriteGapBound)
	if gap > upgradeWriteGapBound {
		t.Errorf("writes on pg-a1 stopped for %s (failed at %v)", gap.Round(time.Millisecond), fail)
	}
	// Through HAProxy (the shipped configuration): the primary's agent
	// restart did not take pg-a1 out of routing.
	pw.mu.Lock()
	pgap := longestWriteGap(pw.ok, started, ended)
	t.Logf("writes through HAProxy: %d acknowledged, %d failed, longest gap between two %s (bound %s)", len(pw.ok), len(pw.fail), pgap.Round(time.Millisecond), upgradeWriteGapBound)
	if pgap > upgradeWriteGapBound || len(pw.fail) > 0 {
		t.Errorf("writes through HAProxy stopped for %s, failed at %v", pgap.Round(time.Millisecond), pw.fail)
	}
	pw.mu.Unlock()
	if st, down, err := hap.server("pg-a1"); err != nil || st != "UP" || down != downBefore {
		t.Errorf("HAProxy: pg-a1 is %s (%v) with %d UP->DOWN transitions, %d before the upgrade: an agent restart took the primary out of routing", st, err, down, downBefore)
	}
	if c, err := l.clusterNow(); err != nil {
		t.Error(err)
	} else if c.Primary != "pg-a1" || c.Epoch != epoch {
		t.Errorf("after the upgrade: primary %s epoch %d, want pg-a1 at %d", c.Primary, c.Epoch, epoch)
	}
	for _, ev := range l.history(t) {
		if strings.HasPrefix(ev.Kind, "failover") || ev.Kind == "fenced" {
			t.Errorf("history: %s %s %s", ev.Kind, ev.Node, ev.Message)
		}
	}
	for _, tg := range targets {
		if ver, err := runningVersion(tg); err != nil || ver != newVersion {
			t.Errorf("%s runs %q (%v) after the upgrade, want %s", tg.name, ver, err, newVersion)
		}
	}
	// No process runs a replaced executable (an old agent's watchdog child
	// left guarding, a coordinator not restarted).
	pids, _ := exec.Command("pgrep", "-f", l.dir+"/bin/").Output()
	for _, pid := range strings.Fields(string(pids)) {
		exe, err := os.Readlink(filepath.Join("/proc", pid, "exe"))
		if err == nil && strings.HasSuffix(exe, " (deleted)") {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
			t.Errorf("process %s still runs the old executable: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
}
