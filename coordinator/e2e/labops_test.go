package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// Steps the lab tests take again and again: processes killed and started,
// waits on `pgdrctl status --json`, single writes.

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

// stopPid sends SIGTERM to the process in pidFile and waits until it is gone.
func stopPid(t *testing.T, pidFile string) {
	t.Helper()
	pid := readPid(t, pidFile)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %d (%s): %v", pid, pidFile, err)
	}
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("process %d (%s) exits", pid, pidFile), func() (bool, error) {
		return syscall.Kill(pid, 0) != nil, nil
	})
}

// killNode kills -9 a node's agent and postmaster together and returns when.
func (l *lab) killNode(t *testing.T, node string) time.Time {
	t.Helper()
	agentPid := readPid(t, filepath.Join(l.dir, node, "agent.pid"))
	pmPid := readPid(t, filepath.Join(l.dir, node, "pgdata", "postmaster.pid"))
	killed := time.Now()
	_ = syscall.Kill(agentPid, syscall.SIGKILL)
	_ = syscall.Kill(pmPid, syscall.SIGKILL)
	return killed
}

// startAgent starts a node's agent (the lab script's start-agent).
func (l *lab) startAgent(t *testing.T, node string) {
	t.Helper()
	if out, err := l.labScript(t.Context(), "start-agent", node); err != nil {
		t.Fatalf("start-agent %s: %v\n%s", node, err, out)
	}
}

// restartAgent stops a node's agent (SIGTERM) and starts it again.
func (l *lab) restartAgent(t *testing.T, node string) {
	t.Helper()
	stopPid(t, filepath.Join(l.dir, node, "agent.pid"))
	l.startAgent(t, node)
}

// clusterNow returns the main cluster from pgdrctl status.
func (l *lab) clusterNow() (ctl.ClusterJSON, error) {
	v, _, err := l.status()
	if err != nil {
		return ctl.ClusterJSON{}, err
	}
	c, ok := labCluster(v, "main")
	if !ok {
		return c, fmt.Errorf("no cluster main in status")
	}
	return c, nil
}

// wantPrimary fails the test unless node is the main cluster's primary, and
// returns the epoch.
func (l *lab) wantPrimary(t *testing.T, node string) uint64 {
	t.Helper()
	c, err := l.clusterNow()
	if err != nil {
		t.Fatal(err)
	}
	if c.Primary != node {
		t.Fatalf("primary %q, want %s", c.Primary, node)
	}
	return c.Epoch
}

// waitNewPrimary waits until a node other than old is the primary, at an
// epoch after oldEpoch, and reports the role primary.
func (l *lab) waitNewPrimary(t *testing.T, old string, oldEpoch uint64, timeout time.Duration) (name string, epoch uint64) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("a new primary after %s at epoch %d", old, oldEpoch), func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		m, _ := labMember(c, c.Primary)
		if c.Epoch <= oldEpoch || c.Primary == "" || c.Primary == old || m.Role != "primary" {
			return false, fmt.Errorf("primary %s (%s) epoch %d; failover: %s", c.Primary, m.Role, c.Epoch, c.Failover)
		}
		name, epoch = c.Primary, c.Epoch
		return true, nil
	})
	return name, epoch
}

// waitHealthyReplica waits until node is a healthy replica.
func (l *lab) waitHealthyReplica(t *testing.T, node string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, node+" rejoined as a healthy replica", func() (bool, error) {
		c, err := l.clusterNow()
		if err != nil {
			return false, err
		}
		m, _ := labMember(c, node)
		return m.Role == "replica" && m.Healthy, fmt.Errorf("%s: role %s healthy %v problems %v", node, m.Role, m.Healthy, m.Problems)
	})
}

// waitTable waits until node has the one row of table (made by CREATE
// TABLE … AS SELECT 1 on the primary).
func (l *lab) waitTable(t *testing.T, node, table string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, node+" has "+table, func() (bool, error) {
		out, err := l.psql(node, "SELECT count(*) FROM "+table)
		return err == nil && out == "1", err
	})
}

// tryWrite inserts node's name into table on node, with a one-second
// budget for connecting and writing; it reports whether the write
// committed.
func (l *lab) tryWrite(node, table string) bool { return l.tryWriteWithin(node, table, time.Second) }

// tryWriteWithin is tryWrite with a budget of d.
func (l *lab) tryWriteWithin(node, table string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=%d", l.pgPort(node), max(1, int(d/time.Second))))
	if err != nil {
		return false
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "INSERT INTO "+table+" (node) VALUES ($1)", node)
	return err == nil
}

// holdNoFailover checks, every 500 ms for d, that pg-a1 stays the recorded
// primary at epoch (and whatever each checks, when given), and returns the
// distinct failover judgements status showed, in order.
func (l *lab) holdNoFailover(t *testing.T, d time.Duration, epoch uint64, each func(elapsed time.Duration)) []string {
	t.Helper()
	var seen []string
	start := time.Now()
	for time.Since(start) < d {
		c, err := l.clusterNow()
		if err != nil {
			t.Fatal(err)
		}
		if c.Primary != "pg-a1" || c.Epoch != epoch {
			t.Fatalf("%s into the hold: primary %s at epoch %d (failover: %s)", time.Since(start).Round(time.Millisecond), c.Primary, c.Epoch, c.Failover)
		}
		if len(seen) == 0 || seen[len(seen)-1] != c.Failover {
			seen = append(seen, c.Failover)
		}
		if each != nil {
			each(time.Since(start))
		}
		time.Sleep(500 * time.Millisecond)
	}
	return seen
}

// judgementWith returns the last judgement containing sub ("" if none).
func judgementWith(seen []string, sub string) string {
	for i := len(seen) - 1; i >= 0; i-- {
		if strings.Contains(seen[i], sub) {
			return seen[i]
		}
	}
	return ""
}
