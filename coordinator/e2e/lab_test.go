package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// The lab's health.interval (scripts/lab.sh writes 1s into every agent.yaml).
const labHealthInterval = time.Second

var labAgentBin, labCoordBin, labCtlBin testutil.Builder

// lab is a running scripts/lab.sh lab.
type lab struct {
	root, dir string
	base      int
	env       []string
}

// Port offsets of scripts/lab.sh (base + offset); see `lab.sh ports`.
func (l *lab) pgPort(node string) int     { return l.base + 10*labNodeIdx(node) + 1 }
func (l *lab) healthPort(node string) int { return l.base + 10*labNodeIdx(node) + 2 }

func labNodeIdx(node string) int {
	return map[string]int{"pg-a1": 4, "pg-a2": 5, "pg-b1": 6}[node]
}

// labPortBaseFree reports whether every port the lab would use (base+1 ..
// base+69, TCP, and UDP for gossip) can be bound now.
func labPortBaseFree(base int) bool {
	for p := base + 1; p <= base+69; p++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		l.Close()
		if p%10 == 4 || p%10 == 3 { // gossip ports (coordinators +4, nodes +3)
			u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return false
			}
			u.Close()
		}
	}
	return true
}

// labFreeBase picks a port base whose whole range is free, below Linux's
// ephemeral range like testutil.FreePort.
func labFreeBase(t *testing.T) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		base := 20000 + 100*rand.IntN(118) // 20000..31700, range ends below 31800
		if labPortBaseFree(base) {
			return base
		}
	}
	t.Fatal("no free port range of 70 ports found in 20000-31800")
	return 0
}

// labScript runs scripts/lab.sh with the lab's environment.
func (l *lab) labScript(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(l.root, "scripts", "lab.sh")}, args...)...)
	cmd.Dir = l.root
	cmd.Env = append(os.Environ(), l.env...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startLab builds the binaries, starts the lab and registers `lab.sh down`.
// extraEnv (NAME=value) is passed to lab.sh, e.g. PGDR_LAB_MIN_INTERVAL=1s.
func startLab(t *testing.T, extraEnv ...string) *lab {
	t.Helper()
	root := testutil.RepoRoot(t)
	binDir, err := os.MkdirTemp("", "pgdr-lab-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	for _, b := range []struct {
		builder   *testutil.Builder
		pkg, name string
	}{
		{&labAgentBin, "./agent/cmd/pgdr-agent", "pgdr-agent"},
		{&labCoordBin, "./coordinator/cmd/pgdr-coordinator", "pgdr-coordinator"},
		{&labCtlBin, "./coordinator/cmd/pgdrctl", "pgdrctl"},
	} {
		if err := os.Symlink(b.builder.Build(t, b.pkg, b.name), filepath.Join(binDir, b.name)); err != nil {
			t.Fatal(err)
		}
	}
	// The lab's parent must be traversable by postgres (t.TempDir is 0700).
	parent := pgtest.OwnedDir(t, "pgdr-lab-test-")
	l := &lab{root: root, dir: filepath.Join(parent, "lab")}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out string
	for attempt := 1; ; attempt++ {
		l.base = labFreeBase(t)
		l.env = []string{"PGDR_LAB_DIR=" + l.dir, fmt.Sprintf("PGDR_LAB_PORT_BASE=%d", l.base), "PGDR_BIN=" + binDir, "PGDR_LAB_TIMEOUT=90"}
		l.env = append(l.env, extraEnv...)
		start := time.Now()
		out, err = l.labScript(ctx, "up")
		if err == nil {
			t.Logf("lab up in %s (dir %s, ports %d..%d)", time.Since(start).Round(time.Millisecond), l.dir, l.base+1, l.base+69)
			break
		}
		// Another test may have taken a port between our check and the
		// script's: try another range.
		if attempt < 3 && strings.Contains(out, "is in use") {
			t.Logf("lab up: %s; trying another port range", strings.TrimSpace(out))
			continue
		}
		l.down(t)
		l.logTails(t)
		t.Fatalf("lab.sh up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.logTails(t)
			l.keepLogs(t)
		}
		l.down(t)
	})
	l.env = append(l.env,
		"PGDR_ADDR="+strings.Join([]string{l.addr(1), l.addr(2), l.addr(3)}, ","),
		"PGDR_CA="+filepath.Join(l.dir, "tls", "ca.crt"),
		"PGDR_CERT="+filepath.Join(l.dir, "tls", "admin.crt"),
		"PGDR_KEY="+filepath.Join(l.dir, "tls", "admin.key"))
	return l
}

func (l *lab) addr(i int) string { return fmt.Sprintf("127.0.0.1:%d", l.base+10*i+2) }

func (l *lab) down(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := l.labScript(ctx, "down"); err != nil {
		t.Errorf("lab.sh down: %v\n%s", err, out)
	}
	if out, _ := exec.Command("pgrep", "-fa", l.dir+"/").Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("processes of the lab left after lab.sh down:\n%s", out)
	}
}

// logTails prints the end of every lab log.
func (l *lab) logTails(t *testing.T) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(l.dir, "*", "*.log"))
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("----- %s (last %d lines) -----\n%s", f, len(lines), strings.Join(lines, "\n"))
	}
}

// keepLogs copies the lab's logs (whole, where logTails shows their
// ends) to /tmp/pgdr-failed-labs/TEST-TIME/ for reading after the run.
func (l *lab) keepLogs(t *testing.T) {
	t.Helper()
	dest := filepath.Join(os.TempDir(), "pgdr-failed-labs", strings.ReplaceAll(t.Name(), "/", "_")+"-"+time.Now().UTC().Format("20060102T150405"))
	logs, _ := filepath.Glob(filepath.Join(l.dir, "*", "*.log"))
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		to := filepath.Join(dest, filepath.Base(filepath.Dir(f))+"-"+filepath.Base(f))
		if err := os.MkdirAll(dest, 0o755); err == nil {
			err = os.WriteFile(to, b, 0o644)
		}
		if err != nil {
			t.Logf("keeping %s: %v", f, err)
			return
		}
	}
	t.Logf("the lab's logs are kept in %s", dest)
}

// ctl runs pgdrctl (the lab's copy) as admin.
func (l *lab) ctl(args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(l.dir, "bin", "pgdrctl"), args...)
	cmd.Env = append(os.Environ(), l.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("pgdrctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func (l *lab) status() (ctl.StatusJSON, []byte, error) {
	var v ctl.StatusJSON
	out, err := l.ctl("status", "--json")
	if err != nil {
		return v, out, err
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return v, out, fmt.Errorf("status --json is not JSON: %v\n%s", err, out)
	}
	return v, out, nil
}

func labCluster(v ctl.StatusJSON, name string) (ctl.ClusterJSON, bool) {
	for _, c := range v.Clusters {
		if c.Name == name {
			return c, true
		}
	}
	return ctl.ClusterJSON{}, false
}

func labMember(c ctl.ClusterJSON, name string) (ctl.MemberJSON, bool) {
	for _, m := range c.Members {
		if m.Name == name {
			return m, true
		}
	}
	return ctl.MemberJSON{}, false
}

// pgCtl runs pg_ctl on a lab node as the postgres user.
func (l *lab) pgCtl(t *testing.T, node string, args ...string) {
	t.Helper()
	dir := filepath.Join(l.dir, node)
	all := append([]string{"-D", filepath.Join(dir, "pgdata")}, args...)
	cmd := exec.Command(filepath.Join(pgtest.DefaultBinDir, "pg_ctl"), all...)
	if cred := pgtest.Credential(t); cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Dir = dir
	// pg_ctl start leaves the postmaster running with its output in the
	// log file (-l), so the pipe closes when pg_ctl exits.
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %s on %s: %v\n%s", strings.Join(args, " "), node, err, out)
	}
}

func httpCode(url string) (int, error) {
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestLab runs the real local lab (scripts/lab.sh): 3 coordinators, a
// PostgreSQL 15 primary and two streaming replicas in two regions, an agent
// next to each; it checks what pgdrctl and the probes show, pause/resume and
// the history, and that a stopped replica turns unhealthy within a few
// health intervals and recovers when started again. Its coordinators are
// placed badly on purpose (two in us-east-1, one in eu-west-1): status
// warns that losing us-east-1 loses quorum (the default placement, one
// per region, is TestFailoverKillPrimaryRegion's).
func TestLab(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real lab (PostgreSQL 15, 3 coordinators, 3 agents)")
	}
	l := startLab(t, "PGDR_LAB_COORDINATOR_REGIONS=us-east-1 us-east-1 eu-west-1")
	nodes := []string{"pg-a1", "pg-a2", "pg-b1"}
	regions := map[string]string{"pg-a1": "us-east-1", "pg-a2": "us-east-1", "pg-b1": "eu-west-1"}

	// --- status --json: coordinators, cluster, members --------------------
	v, raw, err := l.status()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first pgdrctl status --json:\n%s", raw)
		}
	})
	var shape map[string]any
	if err := json.Unmarshal(raw, &shape); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"coordinators", "clusters"} {
		if _, ok := shape[k]; !ok {
			t.Errorf("status --json lacks %q", k)
		}
	}
	if len(v.Coordinators) != 3 {
		t.Fatalf("%d coordinators, want 3: %+v", len(v.Coordinators), v.Coordinators)
	}
	leaders := 0
	for _, c := range v.Coordinators {
		if c.Leader {
			leaders++
		}
		if c.Address == "" || c.Name == "" {
			t.Errorf("coordinator %+v lacks name or address", c)
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders, want 1: %+v", leaders, v.Coordinators)
	}
	if len(v.Warnings) != 1 || v.Warnings[0].Kind != "quorum" || v.Warnings[0].Region != "us-east-1" ||
		!strings.Contains(v.Warnings[0].Message, "losing region us-east-1 (coordinators c1, c2) loses the coordinators' quorum") {
		t.Errorf("layout warnings %+v, want one: losing us-east-1 (c1, c2) loses quorum", v.Warnings)
	}
	if out, err := l.ctl("status"); err != nil || !strings.Contains(string(out), "WARNING: losing region us-east-1") {
		t.Errorf("status (human) lacks the layout warning (err %v):\n%s", err, out)
	}
	cl, ok := labCluster(v, "main")
	if !ok {
		t.Fatalf("no cluster main in %+v", v.Clusters)
	}
	if cl.Primary != "pg-a1" || cl.Epoch < 1 {
		t.Errorf("cluster main: primary %q epoch %d, want pg-a1 and epoch >= 1", cl.Primary, cl.Epoch)
	}
	if len(cl.Members) != 3 {
		t.Fatalf("%d members, want 3: %+v", len(cl.Members), cl.Members)
	}
	var timeline uint32
	for _, n := range nodes {
		m, ok := labMember(cl, n)
		if !ok {
			t.Errorf("member %s missing", n)
			continue
		}
		want := "replica"
		if n == "pg-a1" {
			want = "primary"
		}
		if m.Role != want || !m.Healthy || m.Region != regions[n] {
			t.Errorf("%s: role %q healthy %v region %q (problems %v), want %s, healthy, %s", n, m.Role, m.Healthy, m.Region, m.Problems, want, regions[n])
		}
		if m.Timeline < 1 || (timeline != 0 && m.Timeline != timeline) {
			t.Errorf("%s: timeline %d (others %d)", n, m.Timeline, timeline)
		}
		timeline = m.Timeline
		if m.LSN == "" || m.LagBytes < 0 || m.DSN == "" {
			t.Errorf("%s: lsn %q lag_bytes %d dsn %q", n, m.LSN, m.LagBytes, m.DSN)
		}
	}

	// --- /primary and /replica on every agent -----------------------------
	for _, n := range nodes {
		wantPrimary, wantReplica := 503, 200
		if n == "pg-a1" {
			wantPrimary, wantReplica = 200, 503
		}
		for path, want := range map[string]int{"/primary": wantPrimary, "/replica": wantReplica} {
			url := fmt.Sprintf("http://127.0.0.1:%d%s", l.healthPort(n), path)
			code, err := httpCode(url)
			if err != nil || code != want {
				t.Errorf("GET %s (%s) = %d, %v; want %d", url, n, code, err, want)
			}
		}
	}

	// --- history: registrations and the initial primary -------------------
	out, err := l.ctl("history", "--json", "--cluster", "main")
	if err != nil {
		t.Fatal(err)
	}
	var hist ctl.HistoryJSON
	if err := json.Unmarshal(out, &hist); err != nil {
		t.Fatalf("history --json: %v\n%s", err, out)
	}
	registered := map[string]bool{}
	primarySet := false
	for _, ev := range hist.Events {
		switch ev.Kind {
		case "member-registered":
			registered[ev.Node] = true
		case "primary-set":
			if ev.Node == "pg-a1" && ev.Epoch >= 1 {
				primarySet = true
			}
		}
	}
	for _, n := range nodes {
		if !registered[n] {
			t.Errorf("history has no member-registered event for %s:\n%s", n, out)
		}
	}
	if !primarySet {
		t.Errorf("history has no primary-set event for pg-a1:\n%s", out)
	}

	// --- pause / resume round trip ----------------------------------------
	out, err = l.ctl("pause", "--cluster", "main", "--reason", "lab test", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var pr ctl.PolicyResultJSON
	if err := json.Unmarshal(out, &pr); err != nil || pr.Cluster != "main" || !pr.Policy.Paused || pr.Policy.PausedReason != "lab test" {
		t.Errorf("pause --json: %v %+v\n%s", err, pr, out)
	}
	if v, _, err := l.status(); err != nil {
		t.Error(err)
	} else if c, _ := labCluster(v, "main"); !c.Paused || c.PausedReason != "lab test" {
		t.Errorf("status after pause: paused %v reason %q", c.Paused, c.PausedReason)
	}
	out, err = l.ctl("resume", "--cluster", "main", "--json")
	if err != nil {
		t.Fatal(err)
	}
	pr = ctl.PolicyResultJSON{}
	if err := json.Unmarshal(out, &pr); err != nil || pr.Policy.Paused {
		t.Errorf("resume --json: %v %+v\n%s", err, pr, out)
	}
	if v, _, err := l.status(); err != nil {
		t.Error(err)
	} else if c, _ := labCluster(v, "main"); c.Paused {
		t.Errorf("status after resume: still paused (%q)", c.PausedReason)
	}
	out, err = l.ctl("history", "--json", "--cluster", "main")
	if err != nil {
		t.Fatal(err)
	}
	hist = ctl.HistoryJSON{}
	if err := json.Unmarshal(out, &hist); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range hist.Events {
		kinds = append(kinds, ev.Kind)
	}
	if k := strings.Join(kinds, " "); !strings.Contains(k, "paused") || !strings.Contains(k, "resumed") ||
		strings.LastIndex(k, "paused") > strings.LastIndex(k, "resumed") {
		t.Errorf("history lacks paused then resumed: %v", kinds)
	}

	// --- a stopped replica turns unhealthy, and recovers ------------------
	l.pgCtl(t, "pg-b1", "stop", "-m", "fast", "-w")
	stopped := time.Now()
	bound := 3 * labHealthInterval
	var last ctl.MemberJSON
	var reportedAt time.Time // when the agent's first "stopped" report was made
	testutil.WaitFor(t, bound+30*time.Second, "pg-b1 reported stopped and unhealthy", func() (bool, error) {
		v, _, err := l.status()
		answered := time.Now()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		m, ok := labMember(c, "pg-b1")
		if !ok {
			return false, fmt.Errorf("no member pg-b1")
		}
		last = m
		if !m.Healthy && m.Role == "stopped" {
			// The report's age is measured when status was answered, so
			// this time is no earlier than the report's own.
			reportedAt = answered.Add(-time.Duration(m.LastReportAgeSeconds * float64(time.Second)))
			return true, nil
		}
		return false, fmt.Errorf("pg-b1: role %s healthy %v", m.Role, m.Healthy)
	})
	took := reportedAt.Sub(stopped)
	t.Logf("pg-b1 stopped: the agent reported role=stopped healthy=false %s after pg_ctl stop returned; status showed it %s after (bound 3 × health.interval = %s; problems %v)",
		took.Round(10*time.Millisecond), time.Since(stopped).Round(10*time.Millisecond), bound, last.Problems)
	// The agent's detection is what health.interval promises; the polling
	// of status and report delivery are not counted.
	if took > bound {
		t.Errorf("the agent reported pg-b1 stopped %s after the stop, beyond 3 × health.interval (%s)", took.Round(10*time.Millisecond), bound)
	}
	// The primary and the other replica are unaffected.
	v, _, err = l.status()
	if err != nil {
		t.Fatalf("status while pg-b1 is stopped: %v", err)
	}
	c, _ := labCluster(v, "main")
	for _, n := range []string{"pg-a1", "pg-a2"} {
		if m, ok := labMember(c, n); !ok || !m.Healthy {
			t.Errorf("%s unhealthy while pg-b1 is stopped: %+v", n, m)
		}
	}
	if code, err := httpCode(fmt.Sprintf("http://127.0.0.1:%d/replica", l.healthPort("pg-b1"))); err != nil || code != 503 {
		t.Errorf("/replica on the stopped pg-b1 = %d, %v; want 503", code, err)
	}

	l.pgCtl(t, "pg-b1", "start", "-w", "-t", "60", "-l", filepath.Join(l.dir, "pg-b1", "postgres.log"))
	started := time.Now()
	testutil.WaitFor(t, 60*time.Second, "pg-b1 healthy again as a streaming replica", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		m, _ := labMember(c, "pg-b1")
		return m.Healthy && m.Role == "replica" && m.Streaming && m.LagBytes >= 0,
			fmt.Errorf("pg-b1: role %s healthy %v streaming %v problems %v", m.Role, m.Healthy, m.Streaming, m.Problems)
	})
	t.Logf("pg-b1 healthy again %s after pg_ctl start returned", time.Since(started).Round(10*time.Millisecond))
	if code, err := httpCode(fmt.Sprintf("http://127.0.0.1:%d/replica", l.healthPort("pg-b1"))); err != nil || code != 200 {
		t.Errorf("/replica on the restarted pg-b1 = %d, %v; want 200", code, err)
	}
}
