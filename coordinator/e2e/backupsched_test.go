package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// standInAgent speaks the agent protocol for one node and follows the
// Raft leader: it reports a fixed health sample and carries out Backup
// orders by answering pending at once and ok after took, delivering the
// answer to whichever coordinator leads by then (as the real agent's
// session does after a change of leader). It stands in for the agent side
// of the Backup order, which is not built yet.
type standInAgent struct {
	node  string
	conns map[string]*grpc.ClientConn // coordinator name -> conn with this agent's certificate
	took  time.Duration
	r     *pgdrv1.HealthReport

	mu   sync.Mutex
	done map[string]int // run id -> how many times it was ordered
}

func (a *standInAgent) leader(ctx context.Context) (pgdrv1.AgentServiceClient, bool) {
	for _, cc := range a.conns {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := pgdrv1.NewAgentServiceClient(cc).Leader(lctx, &pgdrv1.LeaderRequest{})
		cancel()
		if err == nil && resp.GetKnown() {
			if lc, ok := a.conns[resp.GetName()]; ok {
				return pgdrv1.NewAgentServiceClient(lc), true
			}
		}
	}
	return nil, false
}

// complete delivers res to the leader, retrying across a change of leader.
func (a *standInAgent) complete(ctx context.Context, res *pgdrv1.CommandResult) {
	for ctx.Err() == nil {
		if cli, ok := a.leader(ctx); ok {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := cli.CompleteCommand(cctx, res)
			cancel()
			if err == nil {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (a *standInAgent) run(ctx context.Context) {
	for ctx.Err() == nil {
		cli, ok := a.leader(ctx)
		if !ok {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		go func() { // reports until the session ends
			st, err := cli.Report(sctx)
			for err == nil {
				rep := proto.Clone(a.r).(*pgdrv1.HealthReport)
				rep.Time = timestamppb.Now()
				err = st.Send(rep)
				select {
				case <-sctx.Done():
					return
				case <-time.After(300 * time.Millisecond):
				}
			}
			cancel()
		}()
		st, err := cli.Commands(sctx, &pgdrv1.CommandsRequest{Cluster: "main", Node: a.node})
		for err == nil {
			var cmd *pgdrv1.AgentCommand
			if cmd, err = st.Recv(); err != nil {
				break
			}
			if cmd.GetBackup() == nil {
				a.complete(ctx, &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: "main", Node: a.node, Ok: true, Output: "pong"})
				continue
			}
			// A run id is carried out once; a repeat (a new leader ordering
			// again a run it inherited) is answered with the run's state.
			a.mu.Lock()
			a.done[cmd.GetId()]++
			repeat := a.done[cmd.GetId()] > 1
			a.mu.Unlock()
			a.complete(ctx, &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: "main", Node: a.node, Pending: true})
			if repeat {
				continue
			}
			go func(id string) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(a.took):
				}
				a.complete(ctx, &pgdrv1.CommandResult{Id: id, Cluster: "main", Node: a.node, Ok: true,
					Backup: &pgdrv1.BackupReport{BackupId: "B-" + id, SizeBytes: 1 << 20, StoredBytes: 1 << 18}})
			}(cmd.GetId())
		}
		cancel()
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBackupSchedulerLeaderKill: a second-level backup tier runs on the
// replica through three real coordinators; the leader is killed with -9
// while a run is under way. The agent's answer reaches the new leader,
// which records it (the run is neither lost nor run again); the new
// leader makes one catch-up run for the slots missed meanwhile; after the
// cluster was paused over several slots, one catch-up run covers them all;
// and the record as a whole keeps invariant 9: never two runs at once, at most
// one run per slot. (The agent side of the Backup order is a stand-in
// here: the real agent does not carry it out yet.)
func TestBackupSchedulerLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinator processes")
	}
	c := coordtest.Start(t, coordtest.Options{Agents: []string{"pg-a1", "pg-a2"}})
	leader := c.WaitLeader(60 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	agents := map[string]*standInAgent{}
	for _, n := range []string{"pg-a1", "pg-a2"} {
		a := &standInAgent{node: n, conns: map[string]*grpc.ClientConn{}, took: 3 * time.Second, done: map[string]int{},
			r: &pgdrv1.HealthReport{Cluster: "main", Node: n, PostmasterAlive: true, Connectable: true, Timeline: 1, CurrentLsn: 5000}}
		if n == "pg-a2" {
			a.r.InRecovery, a.r.Streaming, a.r.ReceiveLsn, a.r.ReplayLsn = true, true, 5000, 5000
		}
		for _, cn := range c.Nodes {
			a.conns[cn.Name] = c.Conn(cn, n)
		}
		if _, err := pgdrv1.NewAgentServiceClient(a.conns[leader.Name]).Register(ctxT(t), &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{
			Cluster: "main", Name: n, Region: "us-east-1", Dsn: "host=127.0.0.1 port=5432"}}); err != nil {
			t.Fatal(err)
		}
		agents[n] = a
		wg.Add(1)
		go func() { defer wg.Done(); a.run(ctx) }()
	}
	if _, err := c.Admin(leader).SetBackupPolicy(ctxT(t), &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: &pgdrv1.BackupPolicy{
		PitrWindowSeconds: 86400, Tiers: []*pgdrv1.BackupTier{{Name: "fast", Type: "full", Schedule: "*/6 * * * * *", KeepCount: 5, TimeoutSeconds: 60}}}}); err != nil {
		t.Fatal(err)
	}
	runs := func(n *coordtest.Node) []*pgdrv1.BackupRun {
		resp, err := c.Admin(n).ListBackupRuns(ctxT(t), &pgdrv1.ListBackupRunsRequest{Cluster: "main"})
		if err != nil || len(resp.GetClusters()) != 1 {
			return nil
		}
		return resp.GetClusters()[0].GetRuns()
	}
	ok := func(rs []*pgdrv1.BackupRun) int {
		n := 0
		for _, r := range rs {
			if r.GetResult() == "ok" {
				n++
			}
		}
		return n
	}
	testutil.WaitFor(t, 90*time.Second, "two runs ended ok", func() (bool, error) {
		rs := runs(leader)
		return ok(rs) >= 2, fmt.Errorf("%d runs", len(rs))
	})
	// Kill the leader while a run is under way (accepted by the agent,
	// no result yet).
	var inFlight *pgdrv1.BackupRun
	testutil.WaitFor(t, 60*time.Second, "a run accepted and under way", func() (bool, error) {
		rs := runs(leader)
		if len(rs) > 0 && rs[len(rs)-1].GetAcceptedAt() != nil && rs[len(rs)-1].GetResult() == "" {
			inFlight = rs[len(rs)-1]
			return true, nil
		}
		return false, nil
	})
	c.Kill(leader)
	newLeader := c.WaitLeader(60 * time.Second)
	testutil.WaitFor(t, 120*time.Second, "the killed leader's run recorded, and three more runs ok", func() (bool, error) {
		rs := runs(newLeader)
		after := 0
		var killed *pgdrv1.BackupRun
		for _, r := range rs {
			if r.GetId() == inFlight.GetId() {
				killed = r
			}
			if r.GetRequestedBy() == "coordinator:"+newLeader.Name && r.GetResult() == "ok" {
				after++
			}
		}
		return killed.GetResult() != "" && after >= 3, fmt.Errorf("killed run %v, %d ok runs by the new leader", killed, after)
	})
	// A long outage of the scheduler (the cluster paused over several
	// slots): one catch-up run after resume, covering them all.
	if _, err := c.Admin(newLeader).Pause(ctxT(t), &pgdrv1.PauseRequest{Cluster: "main", Reason: "backup outage test"}); err != nil {
		t.Fatal(err)
	}
	var pausedAt int
	testutil.WaitFor(t, 60*time.Second, "no run in flight while paused", func() (bool, error) {
		rs := runs(newLeader)
		pausedAt = len(rs)
		return len(rs) > 0 && rs[len(rs)-1].GetResult() != "", nil
	})
	time.Sleep(20 * time.Second) // the outage: three or more slots of the 6 s schedule pass
	if n := len(runs(newLeader)); n != pausedAt {
		t.Fatalf("%d runs started while paused", n-pausedAt)
	}
	if _, err := c.Admin(newLeader).Resume(ctxT(t), &pgdrv1.ResumeRequest{Cluster: "main"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "the catch-up run and the one after it ended ok", func() (bool, error) {
		rs := runs(newLeader)
		return len(rs) >= pausedAt+2 && rs[pausedAt+1].GetResult() == "ok", fmt.Errorf("%d runs since the pause", len(rs)-pausedAt)
	})
	rs := runs(newLeader)
	if catchUp := rs[pausedAt]; catchUp.GetMissed() < 3 {
		t.Errorf("the catch-up run after the pause covered %d slots, want 3 or more", catchUp.GetMissed())
	}
	var first *pgdrv1.BackupRun
	for i, r := range rs {
		if r.GetId() == inFlight.GetId() && (r.GetResult() != "ok" || r.GetBackupId() != "B-"+r.GetId()) {
			t.Errorf("the run under way at the kill ended %s (%s), want ok with the agent's report", r.GetResult(), r.GetError())
		}
		if i > 0 {
			prev := rs[i-1]
			// Never two at once: each run starts after the previous ended.
			if prev.GetFinishedAt() == nil || r.GetStartedAt().AsTime().Before(prev.GetFinishedAt().AsTime()) {
				t.Errorf("run %s started at %s, before run %s ended (%v)", r.GetId(), r.GetStartedAt().AsTime(), prev.GetId(), prev.GetFinishedAt())
			}
			// At most once per slot: the slot a run makes lies after the
			// previous run started, and is not after its own start.
			if !r.GetSlot().AsTime().After(prev.GetStartedAt().AsTime()) || r.GetSlot().AsTime().After(r.GetStartedAt().AsTime()) {
				t.Errorf("run %s makes slot %s; the previous run started %s, this one %s", r.GetId(), r.GetSlot().AsTime(),
					prev.GetStartedAt().AsTime(), r.GetStartedAt().AsTime())
			}
		}
		if first == nil && r.GetRequestedBy() == "coordinator:"+newLeader.Name {
			first = r
		}
	}
	if first == nil || first.GetMissed() < 1 {
		t.Fatalf("no catch-up run by the new leader: %v", first)
	}
	t.Logf("catch-up run by %s covered %d slots", newLeader.Name, first.GetMissed())
	a := agents["pg-a2"]
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range rs {
		if r.GetResult() == "ok" && a.done[r.GetId()] == 0 {
			t.Errorf("run %s (%s) never reached the agent", r.GetId(), r.GetResult())
		}
	}
	for id, n := range a.done {
		if n > 1 {
			t.Logf("run %s was ordered %d times (a new leader ordered again a run it inherited)", id, n)
		}
	}
}
