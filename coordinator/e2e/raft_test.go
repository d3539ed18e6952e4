package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register records a member through node n, as an agent would.
func register(t *testing.T, c *coordtest.Cluster, n *coordtest.Node, cluster, name string) error {
	t.Helper()
	cl := pgdrv1.NewAgentServiceClient(c.Conn(n, n.Name))
	_, err := cl.Register(ctxT(t), &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{
		Cluster: cluster, Name: name, Region: "us-east-1", Dsn: "host=127.0.0.1 port=5432",
	}})
	return err
}

// localHistory reads node n's own replicated history (History is answered
// from the local state machine, not forwarded).
func localHistory(t *testing.T, c *coordtest.Cluster, n *coordtest.Node) []*pgdrv1.HistoryEvent {
	t.Helper()
	h, err := tryHistory(t, c, n)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func tryHistory(t *testing.T, c *coordtest.Cluster, n *coordtest.Node) ([]*pgdrv1.HistoryEvent, error) {
	resp, err := c.Admin(n).History(ctxT(t), &pgdrv1.HistoryRequest{Limit: 100000})
	if err != nil {
		return nil, fmt.Errorf("history from %s: %w", n.Name, err)
	}
	return resp.Events, nil
}

// sameHistory: a equals b, or with prefixOnly, a starts with b.
func sameHistory(a, b []*pgdrv1.HistoryEvent, prefixOnly bool) error {
	if len(a) != len(b) && !(prefixOnly && len(a) > len(b)) {
		return fmt.Errorf("%d events vs %d", len(a), len(b))
	}
	for i := range b {
		if !proto.Equal(a[i], b[i]) {
			return fmt.Errorf("event %d differs: %v vs %v", i, a[i], b[i])
		}
	}
	return nil
}

// waitHistory waits until node n's history equals want (or, with
// prefixOnly, starts with it: a new leader records itself).
func waitHistory(t *testing.T, c *coordtest.Cluster, n *coordtest.Node, want []*pgdrv1.HistoryEvent, prefixOnly bool) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, n.Name+" history caught up", func() (bool, error) {
		h, err := tryHistory(t, c, n)
		if err != nil {
			return false, err
		}
		err = sameHistory(h, want, prefixOnly)
		return err == nil, err
	})
}

func other(c *coordtest.Cluster, not ...*coordtest.Node) *coordtest.Node {
	for _, n := range c.Nodes {
		skip := !n.Running()
		for _, x := range not {
			skip = skip || n == x
		}
		if !skip {
			return n
		}
	}
	return nil
}

// TestRaftKillLeaderRestartAndSnapshots: committed changes survive a
// kill -9 of the leader; the killed node, back after the leader snapshotted
// and compacted its log, catches up; with a low snapshot threshold every
// node snapshots, and after a restart of all three each restores its state
// from its snapshot (raft logs "restored from snapshot") plus the log.
func TestRaftKillLeaderRestartAndSnapshots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{SnapshotThreshold: 8, TrailingLogs: 4})
	leader := c.WaitLeader(60 * time.Second)

	// Writes through a follower are forwarded to the leader.
	follower := other(c, leader)
	for i := 0; i < 12; i++ {
		if err := register(t, c, leader, "main", fmt.Sprintf("pg-%02d", i)); err != nil {
			t.Fatalf("register via leader: %v", err)
		}
	}
	if _, err := c.Admin(follower).Pause(ctxT(t), &pgdrv1.PauseRequest{Cluster: "main", Reason: "e2e"}); err != nil {
		t.Fatalf("pause via follower %s: %v", follower.Name, err)
	}
	want := localHistory(t, c, leader)
	if len(want) < 13 {
		t.Fatalf("history has %d events, want at least 13", len(want))
	}
	for _, n := range c.Nodes {
		waitHistory(t, c, n, want, false)
	}

	// kill -9 the leader: a new one is elected, nothing committed is lost,
	// and the cluster keeps accepting writes.
	hk, err := c.Health(leader)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := hk.AppliedIndex
	c.Kill(leader)
	newLeader := c.WaitLeader(30 * time.Second)
	if newLeader == leader {
		t.Fatal("the killed leader is still the leader")
	}
	waitHistory(t, c, newLeader, want, true)
	if _, err := c.Admin(newLeader).Resume(ctxT(t), &pgdrv1.ResumeRequest{Cluster: "main"}); err != nil {
		t.Fatalf("resume after failover: %v", err)
	}

	// The killed node is now behind. More writes than trailing_logs and the
	// snapshot threshold make the leader snapshot and compact its log, so
	// the returning node must be sent a snapshot.
	for i := 12; i < 40; i++ {
		if err := register(t, c, newLeader, "main", fmt.Sprintf("pg-%02d", i)); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	// Keep writing until the leader's snapshot (after which only 4 log
	// entries are kept) lies well past where the killed node stopped.
	extra := 0
	testutil.WaitFor(t, 60*time.Second, "a leader snapshot past the killed node's log", func() (bool, error) {
		h, err := c.Health(newLeader)
		if err != nil {
			return false, err
		}
		idx, _ := strconv.ParseUint(h.LastSnapshotIndex, 10, 64)
		if idx > killedAt+10 {
			return true, nil
		}
		extra++
		if err := register(t, c, newLeader, "main", fmt.Sprintf("pg-x%02d", extra)); err != nil {
			return false, err
		}
		return false, fmt.Errorf("last snapshot index %d, killed node stopped at %d", idx, killedAt)
	})
	want = localHistory(t, c, newLeader)
	c.StartNode(leader)
	waitHistory(t, c, leader, want, false)
	// Every node snapshots on its own (threshold 8); wait until each has one
	// so that the restart below restores from it.
	for _, n := range c.Nodes {
		testutil.WaitFor(t, 60*time.Second, n.Name+" took a snapshot", func() (bool, error) {
			h, err := c.Health(n)
			if err != nil {
				return false, err
			}
			idx, _ := strconv.ParseUint(h.LastSnapshotIndex, 10, 64)
			return idx > 0, fmt.Errorf("last snapshot index %q", h.LastSnapshotIndex)
		})
	}

	// Restart all three: the state comes back from disk. The log file is
	// appended to across restarts, so only what follows the final restart
	// counts as this start's.
	logStart := map[string]int64{}
	for _, n := range c.Nodes {
		c.Stop(n)
		if fi, err := os.Stat(n.LogPath); err == nil {
			logStart[n.Name] = fi.Size()
		}
	}
	for _, n := range c.Nodes {
		c.StartNode(n)
	}
	c.WaitLeader(60 * time.Second)
	for _, n := range c.Nodes {
		waitHistory(t, c, n, want, false)
		logb, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(logb)) < logStart[n.Name] {
			t.Fatalf("%s's log shrank across the restart", n.Name)
		}
		if !strings.Contains(string(logb[logStart[n.Name]:]), "restored from snapshot") {
			t.Fatalf("%s did not restore its state from a snapshot at its final restart", n.Name)
		}
	}
	m, err := c.Admin(c.Nodes[0]).Members(ctxT(t), &pgdrv1.MembersRequest{Cluster: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Members) != 40+extra {
		t.Fatalf("%d members after restart, want %d", len(m.Members), 40+extra)
	}
	if _, err := os.Stat(filepath.Join(c.Nodes[0].Dir, "data", "raft-wal")); err != nil {
		t.Fatalf("no raft log on disk: %v", err)
	}
}
