package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// readPid reads the first line of a pid file.
func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

// psql runs SQL on a lab node as the postgres user and returns its output.
func (l *lab) psql(node, sql string) (string, error) {
	cmd := exec.Command(filepath.Join(pgtest.DefaultBinDir, "psql"), "-X", "-At", "-h", "127.0.0.1",
		"-p", strconv.Itoa(l.pgPort(node)), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql on %s: %v: %s", node, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// TestFailoverKillPrimary: kill -9 the primary's postmaster and agent
// together. A replica is promoted and takes writes, the other replica
// follows it, the old node (its agent restarted) rejoins as a replica
// through pg_rewind, and `pgdrctl history` shows each step.
func TestFailoverKillPrimary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the lab")
	}
	l := startLab(t)
	v, _, err := l.status()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := labCluster(v, "main")
	if c.Primary != "pg-a1" {
		t.Fatalf("primary %q, want pg-a1", c.Primary)
	}
	epoch0 := c.Epoch
	if _, err := l.psql("pg-a1", "CREATE TABLE before_failover AS SELECT 1 AS x"); err != nil {
		t.Fatal(err)
	}
	// The replicas have it before the primary dies (asynchronous mode: a
	// commit not yet received may be lost, so wait).
	for _, n := range []string{"pg-a2", "pg-b1"} {
		testutil.WaitFor(t, 30*time.Second, n+" replays the table", func() (bool, error) {
			out, err := l.psql(n, "SELECT count(*) FROM before_failover")
			return err == nil && out == "1", err
		})
	}

	agentPid := readPid(t, filepath.Join(l.dir, "pg-a1", "agent.pid"))
	pmPid := readPid(t, filepath.Join(l.dir, "pg-a1", "pgdata", "postmaster.pid"))
	killed := time.Now()
	_ = syscall.Kill(agentPid, syscall.SIGKILL)
	_ = syscall.Kill(pmPid, syscall.SIGKILL)

	var newPrimary string
	testutil.WaitFor(t, 90*time.Second, "a replica promoted and writable", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		if c.Epoch <= epoch0 || (c.Primary != "pg-a2" && c.Primary != "pg-b1") {
			return false, fmt.Errorf("primary %s epoch %d; failover: %s", c.Primary, c.Epoch, c.Failover)
		}
		m, _ := labMember(c, c.Primary)
		if m.Role != "primary" {
			return false, fmt.Errorf("%s has role %s", c.Primary, m.Role)
		}
		newPrimary = c.Primary
		return true, nil
	})
	t.Logf("failover: %s is primary %.1fs after kill -9 of pg-a1", newPrimary, time.Since(killed).Seconds())
	if _, err := l.psql(newPrimary, "CREATE TABLE after_failover AS SELECT 2 AS x"); err != nil {
		t.Fatalf("the new primary does not take writes: %v", err)
	}
	other := "pg-a2"
	if newPrimary == "pg-a2" {
		other = "pg-b1"
	}
	testutil.WaitFor(t, 60*time.Second, other+" follows the new primary", func() (bool, error) {
		out, err := l.psql(other, "SELECT count(*) FROM after_failover")
		return err == nil && out == "1", err
	})

	// The old node comes back (its agent restarted; PostgreSQL is down
	// after the kill): the coordinators order it to rejoin, and it becomes
	// a streaming replica of the new primary.
	if out, err := l.labScript(t.Context(), "start-agent", "pg-a1"); err != nil {
		t.Fatalf("start-agent: %v\n%s", err, out)
	}
	testutil.WaitFor(t, 120*time.Second, "pg-a1 rejoined as a healthy replica", func() (bool, error) {
		v, _, err := l.status()
		if err != nil {
			return false, err
		}
		c, _ := labCluster(v, "main")
		m, _ := labMember(c, "pg-a1")
		return m.Role == "replica" && m.Healthy, fmt.Errorf("pg-a1: role %s healthy %v problems %v", m.Role, m.Healthy, m.Problems)
	})
	testutil.WaitFor(t, 60*time.Second, "pg-a1 replays writes of the new primary", func() (bool, error) {
		out, err := l.psql("pg-a1", "SELECT count(*) FROM after_failover")
		return err == nil && out == "1", err
	})

	out, err := l.ctl("history", "--cluster", "main", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var h ctl.HistoryJSON
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("history --json: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, e := range h.Events {
		seen[e.Kind] = true
	}
	for _, k := range []string{"failover-intent", "primary-set", "failover-step", "failover-result", "rejoin"} {
		if !seen[k] {
			t.Errorf("history has no %s event:\n%s", k, out)
		}
	}
}
