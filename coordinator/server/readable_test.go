package server

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestReadsRefusedBeforeLeaderContact: a coordinator restarted after an
// outage applies only what a leader tells it is committed; until it has
// heard from one, its reads of the replicated state (history, members,
// backup runs, drills, the backup policy) are refused Unavailable, so that
// pgdrctl asks the next coordinator instead of printing an empty history
// (the region-loss e2e saw one from the restarted c1).
func TestReadsRefusedBeforeLeaderContact(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	s := &Server{cfg: &config.Config{Name: "c1"}, log: log, view: newView(), hub: newHub(), leases: newLeases(), judge: newJudgements(),
		syncer: newSyncer(), primaryLSN: newPrimaryLSNs()}
	s.fsm = fsm.New(log, fsm.Options{})
	r := startLeaderlessFollower(t, s)
	a := &adminAPI{s: s}
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"History":        func() error { _, err := a.History(ctx, &pgdrv1.HistoryRequest{Cluster: "main"}); return err },
		"Members":        func() error { _, err := a.Members(ctx, &pgdrv1.MembersRequest{}); return err },
		"ListBackupRuns": func() error { _, err := a.ListBackupRuns(ctx, &pgdrv1.ListBackupRunsRequest{}); return err },
		"ListDrillRuns":  func() error { _, err := a.ListDrillRuns(ctx, &pgdrv1.ListDrillRunsRequest{}); return err },
		"GetBackupPolicy": func() error {
			_, err := a.GetBackupPolicy(ctx, &pgdrv1.GetBackupPolicyRequest{Cluster: "main"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Unavailable {
			t.Errorf("%s on a follower that never heard from a leader: %v, want Unavailable", name, err)
		}
	}
	// A follower that heard from a leader but has not applied the log it
	// held when it started (heartbeats come before the entries) refuses too.
	s.startIndex = r.AppliedIndex() + 5
	if _, err := a.History(ctx, &pgdrv1.HistoryRequest{Cluster: "main"}); status.Code(err) != codes.Unavailable {
		t.Errorf("History on a follower behind its own log: %v, want Unavailable", err)
	}
	// A leader that caught up answers.
	l, _ := adminAPIServer(t)
	testutil.WaitFor(t, 30*time.Second, "the leader caught up", func() (bool, error) { return l.caughtUpLeader(), nil })
	if _, err := (&adminAPI{s: l}).History(ctx, &pgdrv1.HistoryRequest{Cluster: "main"}); err != nil {
		t.Fatalf("History on a caught-up leader: %v", err)
	}
}

// startLeaderlessFollower makes s (named c1) a member of a three-voter Raft
// cluster whose other voters, c2 and c3, exist only in the configuration:
// no leader ever contacts it, and it never campaigns.
func startLeaderlessFollower(t *testing.T, s *Server) *raft.Raft {
	t.Helper()
	rc := raft.DefaultConfig()
	rc.LocalID = "c1"
	rc.Logger = hclogger(s.log, "raft", "")
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = time.Hour, time.Hour, time.Hour // never campaigns in the test
	store := raft.NewInmemStore()
	addr, trans := raft.NewInmemTransport("")
	r, err := raft.NewRaft(rc, s.fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "c1", Address: addr}, {ID: "c2", Address: "nowhere-2"}, {ID: "c3", Address: "nowhere-3"}}}).Error(); err != nil {
		t.Fatal(err)
	}
	s.raft = r
	return r
}
