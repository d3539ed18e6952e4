package server

import (
	"context"
	"github.com/hashicorp/raft"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// yearlyTiers never fall due during a test: only manual runs happen.
func yearlyTiers() *pgdrv1.BackupPolicy {
	return &pgdrv1.BackupPolicy{PitrWindowSeconds: 86400, Tiers: []*pgdrv1.BackupTier{
		{Name: "full", Type: "full", Schedule: "0 3 1 1 *", KeepCount: 2},
		{Name: "incr", Type: "incr", Schedule: "0 4 1 1 *", KeepCount: 2, Repos: []string{"local"}},
	}}
}

// reportHealthy puts fresh reports of a writable pg-a1 and a streaming
// replica pg-a2 into the leader's view.
func reportHealthy(s *Server) {
	now := time.Now()
	s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a1", PostmasterAlive: true, Connectable: true, CurrentLsn: 1000}, now, time.Time{})
	s.view.put(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true, InRecovery: true,
		Streaming: true, ReceiveLsn: 1000, ReplayLsn: 1000}, now, time.Time{})
}

// TestBackupRunAdminAPI: over TLS with the production interceptors, the
// read token lists runs but cannot start one; the admin token runs a
// tier now on the healthy replica (a full, since no full is known), the
// order reaches the agent's command stream, and a second run is refused
// naming the first; today's agent's "unknown command" answer ends the run
// as failed with that error; a pending then final answer records the
// accepted step and the sizes; an unknown tier is refused naming the
// known ones; with no command stream the run is recorded failed at once.
func TestBackupRunAdminAPI(t *testing.T) {
	s, client := adminAPIServer(t)
	ctx := context.Background()
	reader, admin := client("read-secret"), client("admin-secret")
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a2", Cluster: "main", Region: "r1", Dsn: "host=pg-a2", ApiUrl: "http://pg-a2:8008", GossipAddress: "pg-a2:7946"}})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: yearlyTiers()}); err != nil {
		t.Fatal(err)
	}
	agents := &agentAPI{s: s}

	list, err := reader.ListBackupRuns(ctx, &pgdrv1.ListBackupRunsRequest{})
	if err != nil || len(list.GetClusters()) != 1 || len(list.GetClusters()[0].GetRuns()) != 0 {
		t.Fatalf("list before any run: %v %v", list, err)
	}
	if _, err := reader.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "full"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the read token ran a backup: %v", err)
	}
	if _, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "yearly"}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), `unknown tier "yearly": the cluster's tiers are full, incr`) {
		t.Fatalf("unknown tier: %v", err)
	}
	if _, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "nope", Tier: "full"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown cluster: %v", err)
	}
	// No report yet: no member can take it.
	if _, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "full"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "no member can run the backup") {
		t.Fatalf("no healthy member: %v", err)
	}

	stream := s.hub.open(memberKey{"main", "pg-a2"})
	defer s.hub.close(memberKey{"main", "pg-a2"}, stream)
	reportHealthy(s)
	res, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "incr"})
	if err != nil {
		t.Fatal(err)
	}
	run := res.GetRun()
	if run.GetNode() != "pg-a2" || run.GetType() != "full" || run.GetTier() != "incr" || run.GetSentAt() == nil || run.GetResult() != "" ||
		run.GetRequestedBy() != "admin:alice" || !strings.Contains(run.GetReason(), "runs a full instead of incr") {
		t.Fatalf("run %v", run)
	}
	var order *pgdrv1.AgentCommand
	select {
	case order = <-stream:
	case <-time.After(10 * time.Second):
		t.Fatal("no order on pg-a2's command stream")
	}
	if order.GetId() != run.GetId() || order.GetBackup().GetType() != "full" || order.GetBackup().GetRepositories()[0] != "local" ||
		order.GetBackup().GetTimeoutMs() != 2*3600*1000 || order.GetDeadline() == nil {
		t.Fatalf("order %v", order)
	}
	reportHealthy(s)
	if _, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "full"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "another backup of the cluster is running: run "+run.GetId()+" of tier incr (full) on pg-a2") {
		t.Fatalf("a second run while one runs: %v", err)
	}
	// Today's agent does not know the order and says so.
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-a2",
		Error: "unknown command *pgdrv1.AgentCommand_Backup"}); err != nil {
		t.Fatal(err)
	}
	list, err = reader.ListBackupRuns(ctx, &pgdrv1.ListBackupRunsRequest{Cluster: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if got := list.GetClusters()[0].GetRuns()[0]; got.GetResult() != "failed" || got.GetError() != "unknown command *pgdrv1.AgentCommand_Backup" || got.GetFinishedAt() == nil {
		t.Fatalf("run after the agent's answer: %v", got)
	}

	// A run the agent carries out: pending, then done with sizes.
	reportHealthy(s)
	res, err = admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "full"})
	if err != nil {
		t.Fatal(err)
	}
	<-stream
	id := res.GetRun().GetId()
	for _, r := range []*pgdrv1.CommandResult{
		{Id: id, Cluster: "main", Node: "pg-a2", Pending: true, Error: "backup running"},
		{Id: id, Cluster: "main", Node: "pg-a2", Ok: true, Backup: &pgdrv1.BackupReport{BackupId: "B1", SizeBytes: 1 << 20, StoredBytes: 1 << 18}},
	} {
		if _, err := agents.CompleteCommand(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := s.fsm.Cluster("main")
	if got := c.GetBackupRuns()[1]; got.GetResult() != "ok" || got.GetAcceptedAt() == nil || got.GetSizeBytes() != 1<<20 || got.GetBackupId() != "B1" {
		t.Fatalf("run carried out: %v", got)
	}

	// No command stream: recorded not started at once, and said so.
	s.hub.close(memberKey{"main", "pg-a2"}, stream)
	reportHealthy(s)
	res, err = admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "full"})
	if err != nil || res.GetRun().GetResult() != "not_started" || !strings.Contains(res.GetRun().GetError(), "order not sent: the agent of pg-a2: no open command stream") {
		t.Fatalf("run without a stream: %v %v", res, err)
	}
	waitTotalsStarted(t, s)
	before := s.fsm.State()
	if _, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "../x"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad tier name: %v", err)
	}
	after := s.fsm.State()
	after.LastIndex = before.LastIndex
	if !proto.Equal(before, after) {
		t.Fatal("a refused run changed the state")
	}
}

// TestStatusOfOneCluster: the scheduler's per-cluster status (statusOf,
// built from that cluster alone so that a tick over every cluster costs
// their size, not its square — the coordinator bench at 5,000 agents in 50
// clusters lost its leader to the square) says exactly what the status of
// every cluster says about that cluster.
func TestStatusOfOneCluster(t *testing.T) {
	s, _ := adminAPIServer(t)
	for _, cl := range []string{"main", "other"} {
		for _, n := range []string{"pg-a1", "pg-a2"} {
			mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
				Name: n, Cluster: cl, Region: "r1", Dsn: "host=" + n, ApiUrl: "http://" + n + ":8008", GossipAddress: n + ":7946"}})
		}
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: cl, Name: "pg-a1"})
	}
	reportHealthy(s)
	c, ok := s.fsm.Cluster("main")
	if !ok {
		t.Fatal("no cluster main")
	}
	one, all := s.statusOf(c), s.clusterStatus("main")
	if len(one) != 1 || len(all) != 1 {
		t.Fatalf("statuses: %d alone, %d from all, want 1 each", len(one), len(all))
	}
	// The report ages differ by the time between the two calls.
	for _, st := range [][]*pgdrv1.ClusterStatus{one, all} {
		for _, m := range st[0].GetMembers() {
			m.LastReportAgeSeconds = 0
		}
	}
	if !proto.Equal(one[0], all[0]) {
		t.Fatalf("status of main alone:\n%v\nfrom every cluster's:\n%v", one[0], all[0])
	}
	if n := len(one[0].GetMembers()); n < 2 {
		t.Fatalf("status of main has %d members, want pg-a1 and pg-a2", n)
	}
}

// TestCancelBackupRunAdminAPI (review of issue 16, 4): the read token
// cannot cancel; the admin token has the run in flight clean up (its
// cancel result cancelled, with who and why), and its agent gets a cancel
// order; a cancel with no run in
// flight is refused. A final answer about a run the leader does not know
// is acknowledged (it ended or was never recorded: nothing to retry).
func TestCancelBackupRunAdminAPI(t *testing.T) {
	s, client := adminAPIServer(t)
	ctx := context.Background()
	reader, admin := client("read-secret"), client("admin-secret")
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
		Name: "pg-a2", Cluster: "main", Region: "r1", Dsn: "host=pg-a2", ApiUrl: "http://pg-a2:8008", GossipAddress: "pg-a2:7946"}})
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1"})
	if _, err := admin.SetBackupPolicy(ctx, &pgdrv1.SetBackupPolicyRequest{Cluster: "main", Policy: yearlyTiers()}); err != nil {
		t.Fatal(err)
	}
	stream := s.hub.open(memberKey{"main", "pg-a2"})
	defer s.hub.close(memberKey{"main", "pg-a2"}, stream)
	reportHealthy(s)
	if _, err := admin.CancelBackupRun(ctx, &pgdrv1.CancelBackupRunRequest{Cluster: "main"}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "no backup run in flight") {
		t.Fatalf("cancel with nothing in flight: %v", err)
	}
	res, err := admin.RunBackup(ctx, &pgdrv1.RunBackupRequest{Cluster: "main", Tier: "full"})
	if err != nil {
		t.Fatal(err)
	}
	<-stream
	id := res.GetRun().GetId()
	if _, err := reader.CancelBackupRun(ctx, &pgdrv1.CancelBackupRunRequest{Cluster: "main", RunId: id}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the read token cancelled a run: %v", err)
	}
	got, err := admin.CancelBackupRun(ctx, &pgdrv1.CancelBackupRunRequest{Cluster: "main", RunId: id, Note: "agent host lost"})
	if err != nil || got.GetRun().GetResult() != "" || got.GetRun().GetCancelResult() != "cancelled" ||
		got.GetRun().GetCancelNote() != "cancelled by admin:alice: agent host lost" {
		t.Fatalf("cancel: %v %v", got, err)
	}
	select {
	case o := <-stream:
		if !o.GetBackup().GetCancel() || o.GetBackup().GetRunId() != id {
			t.Fatalf("order after the cancel: %v", o)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no cancel order on pg-a2's stream")
	}
	agents := &agentAPI{s: s}
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: "zz", Cluster: "main", Node: "pg-a2", Ok: true,
		Backup: &pgdrv1.BackupReport{RunId: "never-recorded"}}); err != nil {
		t.Fatalf("answer about an unknown run on the leader: %v", err)
	}
	// A leader that has not caught up (or a follower) does not know
	// whether the run exists yet: Unavailable, the agent sends it again.
	s.mu.Lock()
	s.caughtUp = false
	s.mu.Unlock()
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: "zz", Cluster: "main", Node: "pg-a2", Ok: true,
		Backup: &pgdrv1.BackupReport{RunId: "maybe-recorded-soon"}}); status.Code(err) != codes.Unavailable {
		t.Fatalf("answer about an unknown run on a leader catching up: %v, want Unavailable", err)
	}
	// Any other command's answer is acknowledged as before.
	if _, err := agents.CompleteCommand(ctx, &pgdrv1.CommandResult{Id: "ping-1", Cluster: "main", Node: "pg-a2", Ok: true}); err != nil {
		t.Fatalf("a ping's answer: %v", err)
	}
	s.mu.Lock()
	s.caughtUp = true
	s.mu.Unlock()
}

// TestSchedulerMembersAndGate (review of issue 16, 5 and 6): the members
// as the scheduler sees them carry the timeline, the replay lag from the
// primary's LSN and whether their stream is open; the scheduler runs only
// when every voter's feature level is known and high enough.
func TestSchedulerMembersAndGate(t *testing.T) {
	cs := &pgdrv1.ClusterStatus{Name: "main", Primary: "a", Members: []*pgdrv1.MemberStatus{
		{Name: "a", Role: RolePrimary, Timeline: 3, Lsn: 5000},
		{Name: "b", Role: RoleReplica, Timeline: 3, ReplayLsn: 4000, ReceiveLsn: 5000, LagBytes: 0},
		{Name: "c", Role: RoleReplica, Timeline: 2},
	}}
	ms := membersOf(cs, func(k memberKey) bool { return k.node == "b" })
	if ms[0].ReplayLag != 0 || ms[1].ReplayLag != 1000 || ms[1].Timeline != 3 || !ms[1].Stream || ms[2].ReplayLag != -1 || ms[2].Stream {
		t.Fatalf("members %+v", ms)
	}
	for _, tc := range []struct {
		voters []string
		levels map[string]int
		ok     bool
		why    string
	}{
		{[]string{"c1"}, nil, true, ""},
		{[]string{"c1", "c2", "c3"}, map[string]int{"c2": 1, "c3": 1}, true, ""},
		{[]string{"c1", "c2", "c3"}, map[string]int{"c2": 1, "c3": 0}, false, "voter c3 has feature level 0"},
		{[]string{"c1", "c2"}, map[string]int{}, false, "feature level of voter c2 is not known"},
		{nil, nil, false, "not known"},
	} {
		ok, why := votersReady("c1", tc.voters, tc.levels)
		if ok != tc.ok || !strings.Contains(why, tc.why) {
			t.Errorf("%v %v: %v %q", tc.voters, tc.levels, ok, why)
		}
	}
}

// TestSchedulerGateCountsNonvoters (adversarial review of the sched
// branch, g): a non-voter applies the log too (a coordinator being added
// catches up as one for up to two minutes before its promotion): an older
// one would refuse or drop the scheduler's records and its state diverge
// before it ever votes, so the gate counts every server of the Raft
// configuration.
func TestSchedulerGateCountsNonvoters(t *testing.T) {
	cf := raft.Configuration{Servers: []raft.Server{
		{ID: "c1", Suffrage: raft.Voter}, {ID: "c2", Suffrage: raft.Voter}, {ID: "c4", Suffrage: raft.Nonvoter}}}
	servers := logServers(cf)
	ok, why := votersReady("c1", servers, map[string]int{"c2": 1, "c4": 0})
	if ok || !strings.Contains(why, "c4 has feature level 0") {
		t.Fatalf("before: gate open with an old non-voter (servers %v): %v %q", servers, ok, why)
	}
}

// TestSchedulerGateAsksPeers (adversarial review of the sched branch, g):
// gossip is optional (gossip.bind), and without it no voter's feature
// level was ever known: the scheduler of a multi-coordinator deployment
// never ran. A server gossip does not know is asked over the API
// (RaftIndex carries its feature level; an older coordinator answers 0,
// an unreachable one stays unknown).
func TestSchedulerGateAsksPeers(t *testing.T) {
	asked := map[string]int{}
	ask := func(name string) (int, bool) {
		asked[name]++
		switch name {
		case "c2":
			return 1, true
		case "c3":
			return 0, true // an older coordinator: no feature_level in its answer
		}
		return 0, false // unreachable
	}
	levels := peerLevels("c1", []string{"c1", "c2"}, map[string]int{}, ask)
	if ok, why := votersReady("c1", []string{"c1", "c2"}, levels); !ok {
		t.Fatalf("before: no gossip, c2 answers level 1: gate closed: %s", why)
	}
	levels = peerLevels("c1", []string{"c1", "c2", "c3", "c4"}, map[string]int{"c2": 1}, ask)
	if asked["c2"] != 1 || asked["c1"] != 0 {
		t.Fatalf("asked %v: a server gossip knows (or self) is not asked", asked)
	}
	if ok, why := votersReady("c1", []string{"c1", "c2", "c3"}, levels); ok || !strings.Contains(why, "c3 has feature level 0") {
		t.Fatalf("older peer: %v %q", ok, why)
	}
	if ok, why := votersReady("c1", []string{"c1", "c4"}, levels); ok || !strings.Contains(why, "c4 is not known") {
		t.Fatalf("unreachable peer: %v %q", ok, why)
	}
}
