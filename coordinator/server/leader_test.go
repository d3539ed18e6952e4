package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// testConfig is a coordinator configuration with the defaults the leader's
// judgement reads.
func testConfig() *config.Config {
	cfg := &config.Config{Name: "c1"}
	cfg.Health.StaleAfter.Duration = 3 * time.Second
	cfg.Failover.LeaseTTL.Duration = 5 * time.Second
	cfg.Failover.SafetyMargin.Duration = time.Second
	cfg.Failover.MinInterval.Duration = time.Minute
	cfg.Failover.CommandTimeout.Duration = 5 * time.Second
	return cfg
}

// testServer builds a server without TLS files, raft or listeners.
func testServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := newServer(testConfig(), slog.New(slog.DiscardHandler), opts, &config.Tokens{}, &tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startInmemRaft makes s the leader of a one-voter in-memory Raft cluster
// and runs its leadership watch until the test ends.
func startInmemRaft(t testing.TB, s *Server) {
	t.Helper()
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	addr, trans := raft.NewInmemTransport("")
	rc := raft.DefaultConfig()
	rc.LocalID = "c1"
	rc.Logger = hclogger(s.log, "raft", "error")
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	if err := raft.BootstrapCluster(rc, store, store, snaps, trans, raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: rc.LocalID, Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(rc, s.fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	s.raft = r
	ctx, cancel := context.WithCancel(context.Background())
	go s.watchLeadership(ctx)
	t.Cleanup(func() {
		cancel()
		s.endLeadership()
		_ = r.Shutdown().Error()
	})
	testutil.WaitFor(t, 10*time.Second, "the one voter leads", func() (bool, error) { return s.isLeader(), nil })
}

// waitTotalsStarted waits until the leader has started the totals
// (StartTotals, proposed on its own once it is caught up), so that a test
// comparing the state before and after its commands sees only its own.
func waitTotalsStarted(t *testing.T, s *Server) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, "the totals started", func() (bool, error) {
		var since uint64
		s.fsm.Read(func(st *pgdrv1.State) { since = st.GetTotalsSinceIndex() })
		return since != 0, nil
	})
}

// mustPropose applies a command through Raft on the leader.
func mustPropose(t *testing.T, s *Server, typ pgdrv1.CommandType, payload proto.Message) {
	t.Helper()
	if _, err := s.propose(context.Background(), typ, payload, "admin:test"); err != nil {
		t.Fatalf("propose %s: %v", typ, err)
	}
}

// TestRenewLeaseWaitsForBarrier: a new leader refuses renewals, as a
// retryable Unavailable, until this term's barrier has completed; a failed
// barrier makes it step down (and, when that fails too, try again with
// renewals still refused); once the barrier completes the renewal is
// granted.
func TestRenewLeaseWaitsForBarrier(t *testing.T) {
	barrier := make(chan error)
	stepDowns := make(chan struct{}, 4)
	s := testServer(t, Options{
		Barrier: func(time.Duration) error { return <-barrier },
		StepDown: func() error {
			stepDowns <- struct{}{}
			return errors.New("no other voter to transfer leadership to")
		},
	})
	startInmemRaft(t, s)
	for _, n := range []string{"a", "b"} {
		mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{
			Cluster: "main", Name: n, Region: "eu-west-1"}})
	}
	mustPropose(t, s, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "a", ExpectedEpoch: 0})

	api := &agentAPI{s: s}
	req := &pgdrv1.RenewLeaseRequest{Cluster: "main", Node: "a", Epoch: 1}
	refused := func(when string) {
		t.Helper()
		resp, err := api.RenewLease(context.Background(), req)
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not caught up") {
			t.Fatalf("%s: renewal answered %v, %v; want Unavailable (not caught up)", when, resp, err)
		}
	}
	refused("barrier pending")

	barrier <- errors.New("timed out enqueuing operation")
	select {
	case <-stepDowns:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not try to step down after its barrier failed")
	}
	refused("barrier failed, step-down failed")

	barrier <- nil
	testutil.WaitFor(t, 10*time.Second, "the renewal granted after the barrier", func() (bool, error) {
		resp, err := api.RenewLease(context.Background(), req)
		if err != nil {
			return false, err
		}
		return resp.Granted, errors.New("refused: " + resp.Reason)
	})
}
