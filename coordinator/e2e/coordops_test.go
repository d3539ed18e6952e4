package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// logSince returns what n's log holds past offset (its size before a restart).
func logSince(t *testing.T, n *coordtest.Node, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < offset {
		return string(b)
	}
	return string(b[offset:])
}

func logSize(t *testing.T, n *coordtest.Node) int64 {
	t.Helper()
	fi, err := os.Stat(n.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// wipe removes a stopped coordinator's data directory, as a lost disk does.
func wipe(t *testing.T, n *coordtest.Node) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(n.Dir, "data")); err != nil {
		t.Fatal(err)
	}
}

func coordinatorNamed(list []*pgdrv1.CoordinatorStatus, name string) *pgdrv1.CoordinatorStatus {
	for _, c := range list {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestRemoveVoterKeepsQuorum (issue 12 item 8): with one of three voters
// down, removing a healthy one would leave {leader, dead} needing both, so
// the leader refuses and names the unreachable voter; the cluster keeps its
// leader and its three voters.
func TestRemoveVoterKeepsQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{})
	leader := c.WaitLeader(60 * time.Second)
	down := other(c, leader)
	healthy := other(c, leader, down)
	c.Kill(down)
	admin := c.Admin(leader)
	// Gossip marks the dead voter well after raft's heartbeats to it began
	// to fail (every heartbeat_timeout/10).
	testutil.WaitFor(t, 60*time.Second, "gossip sees "+down.Name+" down", func() (bool, error) {
		st, err := admin.Status(ctxT(t), &pgdrv1.StatusRequest{})
		if err != nil {
			return false, err
		}
		g := coordinatorNamed(st.Coordinators, down.Name).GetGossip()
		return g != "alive", fmt.Errorf("gossip state %q", g)
	})
	_, err := admin.RemoveCoordinator(ctxT(t), &pgdrv1.RemoveCoordinatorRequest{Name: healthy.Name})
	if err == nil {
		t.Fatalf("removing %s while %s is down was accepted", healthy.Name, down.Name)
	}
	wantCode(t, "remove with a voter down", err, codes.FailedPrecondition, down.Name)
	wantCode(t, "remove with a voter down", err, codes.FailedPrecondition, "quorum")
	if l := c.WaitLeader(30 * time.Second); l != leader {
		t.Fatalf("leader changed from %s to %s", leader.Name, l.Name)
	}
	st, err := admin.Status(ctxT(t), &pgdrv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Coordinators) != 3 {
		t.Fatalf("coordinators after the refused removal: %v", st.Coordinators)
	}
	// With the dead voter back the same removal is safe.
	c.StartNode(down)
	testutil.WaitFor(t, 60*time.Second, "the removal succeeds once every other voter answers", func() (bool, error) {
		_, err := admin.RemoveCoordinator(ctxT(t), &pgdrv1.RemoveCoordinatorRequest{Name: healthy.Name})
		return err == nil, err
	})
	c.Stop(healthy)
	if l := c.WaitLeader(30 * time.Second); l == nil {
		t.Fatal("no leader after the removal")
	}
}

// TestAddCoordinatorGuards (issue 12 item 11): adding an existing name is
// refused and leaves its address and region alone; a node that cannot be
// reached is added as a non-voter, never promoted, and removed again with an
// error that says so, while the cluster keeps its leader and voters.
func TestAddCoordinatorGuards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{})
	leader := c.WaitLeader(60 * time.Second)
	admin := c.Admin(leader)
	target := other(c, leader)
	before, err := admin.Status(ctxT(t), &pgdrv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	was := coordinatorNamed(before.Coordinators, target.Name)

	_, err = admin.AddCoordinator(ctxT(t), &pgdrv1.AddCoordinatorRequest{Name: target.Name, RaftAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2"})
	wantCode(t, "adding an existing name", err, codes.AlreadyExists, target.Name)
	after, err := admin.Status(ctxT(t), &pgdrv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if now := coordinatorNamed(after.Coordinators, target.Name); now.RaftAddress != was.RaftAddress || now.Region != was.Region || now.Address != was.Address {
		t.Fatalf("%s changed from %v to %v", target.Name, was, now)
	}
	// --update changes what it names and keeps the rest.
	if _, err := admin.AddCoordinator(ctxT(t), &pgdrv1.AddCoordinatorRequest{Name: target.Name, Region: "ap-south-1", Update: true}); err != nil {
		t.Fatalf("update %s's region: %v", target.Name, err)
	}
	testutil.WaitFor(t, 30*time.Second, target.Name+"'s new region", func() (bool, error) {
		st, err := admin.Status(ctxT(t), &pgdrv1.StatusRequest{})
		if err != nil {
			return false, err
		}
		now := coordinatorNamed(st.Coordinators, target.Name)
		return now.Region == "ap-south-1" && now.RaftAddress == was.RaftAddress && now.Address == was.Address && now.Voter, fmt.Errorf("%v", now)
	})
	_, err = admin.AddCoordinator(ctxT(t), &pgdrv1.AddCoordinatorRequest{Name: "c-nope", Region: "x", Update: true})
	wantCode(t, "updating an unknown name", err, codes.NotFound, "c-nope")

	// An address nobody listens on: never caught up, removed again.
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	_, err = admin.AddCoordinator(ctx, &pgdrv1.AddCoordinatorRequest{Name: "c-extra", RaftAddress: dead, ApiAddress: "127.0.0.1:3"})
	wantCode(t, "adding an unreachable node", err, codes.FailedPrecondition, "did not catch up")
	if l := c.WaitLeader(30 * time.Second); l != leader {
		t.Fatalf("leader changed from %s to %s", leader.Name, l.Name)
	}
	testutil.WaitFor(t, 30*time.Second, "three voters and no c-extra", func() (bool, error) {
		st, err := admin.Status(ctxT(t), &pgdrv1.StatusRequest{})
		if err != nil {
			return false, err
		}
		voters := 0
		for _, s := range st.Coordinators {
			if s.Voter {
				voters++
			}
		}
		return voters == 3 && coordinatorNamed(st.Coordinators, "c-extra") == nil, fmt.Errorf("%v", st.Coordinators)
	})
}

// TestWipedCoordinatorDoesNotBootstrap (issue 12 item 10, review D5): a
// member whose data directory is lost must neither bootstrap again from its
// configuration's list nor come back with an empty log while it is still in
// the Raft configuration: it would grant its vote to a candidate lacking
// entries it acknowledged before it lost them (Raft amnesia). Restarted as
// usual it refuses to start, names the fix and creates nothing on disk; the
// others keep their leader. Remove-then-add brings it back with the state.
func TestWipedCoordinatorDoesNotBootstrap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{})
	leader := c.WaitLeader(60 * time.Second)
	if err := register(t, c, leader, "main", "pg-a"); err != nil {
		t.Fatal(err)
	}
	want := localHistory(t, c, leader)
	wiped := other(c, leader)

	// Restarted as usual (no --bootstrap) while still a voter: refused.
	c.Stop(wiped)
	wipe(t, wiped)
	off := logSize(t, wiped)
	c.StartNode(wiped)
	exit, exited := wiped.WaitExit(45 * time.Second)
	l := logSince(t, wiped, off)
	if !exited {
		t.Fatalf("%s started with an empty data directory although it is still a voter of the others' configuration (Raft amnesia); its log:\n%s", wiped.Name, l)
	}
	c.Stop(wiped) // reaped already; marks it stopped
	for _, s := range []string{"still a voter", "pgdrctl coordinator remove --name " + wiped.Name, "pgdrctl coordinator add"} {
		if !strings.Contains(l, s) {
			t.Fatalf("%s's refusal does not say %q:\n%s", wiped.Name, s, l)
		}
	}
	if exit == nil {
		t.Fatalf("%s refused to start but exited with status 0:\n%s", wiped.Name, l)
	}
	t.Logf("%s refused to start (%v): %s", wiped.Name, exit, l)
	if _, err := os.Stat(filepath.Join(wiped.Dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("the refused start created %s's data directory (stat: %v)", wiped.Name, err)
	}
	// The other two keep their leader, the state, and take writes.
	if l := c.WaitLeader(30 * time.Second); l != leader {
		t.Fatalf("leader changed from %s to %s", leader.Name, l.Name)
	}
	waitHistory(t, c, leader, want, true)
	if err := register(t, c, leader, "main", "pg-b"); err != nil {
		t.Fatalf("a write while %s is refused: %v", wiped.Name, err)
	}
	want = localHistory(t, c, leader)

	// With --bootstrap (a service unit that keeps the first start's flags):
	// its peers hold raft state, so it does not bootstrap a second cluster.
	// (It joins as on a first start of a new cluster that another member
	// bootstrapped first, warning; still in the configuration, it is sent
	// the log, hence the second wipe.)
	off = logSize(t, wiped)
	c.StartNode(wiped, "--bootstrap")
	testutil.WaitFor(t, 60*time.Second, wiped.Name+" says a peer holds raft state", func() (bool, error) {
		return strings.Contains(logSince(t, wiped, off), "a bootstrap peer already holds raft state"), nil
	})
	if l := logSince(t, wiped, off); strings.Contains(l, "bootstrapped a new raft cluster") {
		t.Fatalf("%s (run --bootstrap) bootstrapped again after its data was wiped:\n%s", wiped.Name, l)
	}
	if l := c.WaitLeader(30 * time.Second); l != leader {
		t.Fatalf("leader changed from %s to %s", leader.Name, l.Name)
	}
	waitHistory(t, c, leader, want, true)
	c.Stop(wiped)
	wipe(t, wiped)

	// Remove, start (it is in no configuration now, so it starts and
	// waits), then add: it catches up and holds the state again.
	admin := c.Admin(leader)
	if _, err := admin.RemoveCoordinator(ctxT(t), &pgdrv1.RemoveCoordinatorRequest{Name: wiped.Name}); err != nil {
		t.Fatalf("remove %s: %v", wiped.Name, err)
	}
	off = logSize(t, wiped)
	c.StartNode(wiped)
	testutil.WaitFor(t, 60*time.Second, wiped.Name+" says it waits to be added", func() (bool, error) {
		if _, exited := wiped.WaitExit(0); exited {
			return false, fmt.Errorf("%s exited after it was removed:\n%s", wiped.Name, logSince(t, wiped, off))
		}
		return strings.Contains(logSince(t, wiped, off), "waiting to be added"), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := admin.AddCoordinator(ctx, &pgdrv1.AddCoordinatorRequest{Name: wiped.Name, RaftAddress: wiped.RaftAddr, ApiAddress: wiped.APIAddr, Region: "eu-west-1"}); err != nil {
		t.Fatalf("add %s back: %v", wiped.Name, err)
	}
	waitHistory(t, c, wiped, want, true)
	if _, exited := wiped.WaitExit(0); exited {
		t.Fatalf("%s exited after it was added back:\n%s", wiped.Name, logSince(t, wiped, off))
	}
}

// TestRecoverAfterQuorumLoss (issue 12 item 9): two of three coordinators
// lose their disks; `pgdr-coordinator recover` on the third makes it the
// only voter, and started again it leads with the clusters, primary, epoch
// and history intact. A wiped member then rejoins by being added.
func TestRecoverAfterQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{Agents: []string{"pg-a"}})
	leader := c.WaitLeader(60 * time.Second)
	ctx := ctxT(t)
	agent := pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-a"))
	if _, err := agent.Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{Cluster: "main", Name: "pg-a", Region: "us-east-1", Dsn: "host=127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	// Reports of a writable pg-a make the leader record it as the primary.
	stream, err := agent.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "pg-a recorded as the primary", func() (bool, error) {
		if err := stream.Send(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, Timeline: 1, CurrentLsn: 1 << 24}); err != nil {
			return false, err
		}
		st, err := c.Admin(leader).Status(ctx, &pgdrv1.StatusRequest{Cluster: "main"})
		if err != nil {
			return false, err
		}
		return st.Clusters[0].Primary == "pg-a" && st.Clusters[0].Epoch >= 1, fmt.Errorf("%v", st.Clusters[0])
	})
	_, _ = stream.CloseAndRecv()
	if _, err := c.Admin(leader).Pause(ctx, &pgdrv1.PauseRequest{Cluster: "main", Reason: "before the disks were lost"}); err != nil {
		t.Fatal(err)
	}
	want := localHistory(t, c, leader)
	for _, n := range c.Nodes {
		waitHistory(t, c, n, want, false)
	}
	survivor := c.Nodes[0]
	// While the other two still form a quorum, recover is refused (review
	// D6: a second, one-voter cluster would form beside theirs).
	c.Stop(survivor)
	out, err := exec.Command(coordtest.Binary(t), "recover", "--config", survivor.Config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "still run") || !strings.Contains(string(out), "--force") {
		t.Fatalf("recover while %s and %s run: %v\n%s", c.Nodes[1].Name, c.Nodes[2].Name, err, out)
	}
	t.Logf("recover refused while the others run: %s", out)
	for _, n := range c.Nodes[1:] {
		c.Stop(n)
	}
	for _, n := range c.Nodes[1:] {
		wipe(t, n)
	}

	out, err = exec.Command(coordtest.Binary(t), "recover", "--config", survivor.Config).CombinedOutput()
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	t.Logf("recover: %s", out)
	off := logSize(t, survivor)
	c.StartNode(survivor)
	if l := c.WaitLeader(60 * time.Second); l != survivor {
		t.Fatalf("leader %s, want the recovered %s", l.Name, survivor.Name)
	}
	waitHistory(t, c, survivor, want, true)
	st, err := c.Admin(survivor).Status(ctxT(t), &pgdrv1.StatusRequest{Cluster: "main"})
	if err != nil {
		t.Fatal(err)
	}
	cs := st.Clusters[0]
	if cs.Primary != "pg-a" || cs.Epoch < 1 || !cs.GetPolicy().GetPaused() {
		t.Fatalf("cluster after recovery: %v", cs)
	}
	if len(st.Coordinators) != 1 || !st.Coordinators[0].Voter {
		t.Fatalf("coordinators after recovery: %v", st.Coordinators)
	}
	if l := logSince(t, survivor, off); strings.Contains(l, "bootstrapped a new raft cluster") {
		t.Fatalf("the recovered node bootstrapped:\n%s", l)
	}

	// A wiped member starts empty, waits, and is added back.
	back := c.Nodes[1]
	c.StartNode(back)
	actx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Admin(survivor).AddCoordinator(actx, &pgdrv1.AddCoordinatorRequest{Name: back.Name, RaftAddress: back.RaftAddr, ApiAddress: back.APIAddr, Region: "eu-west-1"}); err != nil {
		t.Fatalf("add %s back: %v", back.Name, err)
	}
	waitHistory(t, c, back, want, true)
}

// TestAddUnreachableToOneVoter (issue 12 item 11): with one voter, adding
// a voter nobody runs used to make the configuration {c1, dead} whose
// quorum is both: the leader lost its leadership for good. Added as a
// non-voter that never catches up, it is removed again and c1 still leads
// and takes writes.
func TestAddUnreachableToOneVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{N: 1})
	leader := c.WaitLeader(60 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	_, err := c.Admin(leader).AddCoordinator(ctx, &pgdrv1.AddCoordinatorRequest{Name: "c-extra", RaftAddress: dead, ApiAddress: "127.0.0.1:3"})
	if err == nil {
		t.Fatal("adding an unreachable voter succeeded")
	}
	t.Logf("add: %v", err)
	if l := c.WaitLeader(30 * time.Second); l != leader {
		t.Fatalf("leader %v, want %s", l, leader.Name)
	}
	if err := register(t, c, leader, "main", "pg-after"); err != nil {
		t.Fatalf("a write after the failed add: %v", err)
	}
}
