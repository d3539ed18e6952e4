package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/outcome"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// raftError classifies the error of a Raft future on the leader. Only the
// errors raft raises before the entry reaches the log prove that nothing
// was submitted; any other (leadership lost while committing, shutdown,
// a store failure) may follow an entry that is or will be committed.
func raftError(what string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return outcome.NotSubmitted("%s: %v; nothing was submitted", what, err)
	}
	return outcome.Unknown(what, err)
}

// contacts follows the leader's heartbeats to each peer, from raft's
// observations: a peer is unreachable from the first failed heartbeat
// until one succeeds again. Leadership and membership changes start afresh.
type contacts struct {
	mu      sync.Mutex
	failing map[raft.ServerID]time.Time // peer → its last successful contact
}

func newContacts() *contacts { return &contacts{failing: map[raft.ServerID]time.Time{}} }

// watch registers an observer on r and records heartbeat failures until
// ctx ends.
func (c *contacts) watch(ctx context.Context, r *raft.Raft) {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(obs)
	defer r.DeregisterObserver(obs)
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-ch:
			c.observe(o.Data)
		}
	}
}

func (c *contacts) observe(o any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch o := o.(type) {
	case raft.FailedHeartbeatObservation:
		if _, ok := c.failing[o.PeerID]; !ok {
			c.failing[o.PeerID] = o.LastContact
		}
	case raft.ResumedHeartbeatObservation:
		delete(c.failing, o.PeerID)
	case raft.PeerObservation:
		// Replication to the peer starts or stops; a new heartbeat loop
		// reports no resumption, so start afresh.
		delete(c.failing, o.Peer.ID)
	case raft.LeaderObservation:
		clear(c.failing)
	}
}

// unreachable returns the peers whose heartbeats fail, with their last
// successful contact (zero when this leader never reached them).
func (c *contacts) unreachable() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]time.Time{}
	for id, t := range c.failing {
		out[string(id)] = t
	}
	return out
}

// checkRemovalQuorum refuses removing remove from voters when the voters
// left would not hold a majority the leader (self) currently reaches: the
// configuration change itself must be committed by that majority, so the
// leader would step down and nobody could be elected.
func checkRemovalQuorum(voters []string, remove, self string, unreachable map[string]time.Time, now time.Time) error {
	var left, down []string
	reached := 0
	for _, v := range voters {
		if v == remove {
			continue
		}
		left = append(left, v)
		if last, ok := unreachable[v]; ok && v != self {
			if last.IsZero() {
				down = append(down, v+" (not reached by this leader)")
			} else {
				down = append(down, fmt.Sprintf("%s (last reached %s ago)", v, now.Sub(last).Round(time.Second)))
			}
			continue
		}
		reached++
	}
	need := len(left)/2 + 1
	if reached >= need {
		return nil
	}
	sort.Strings(down)
	return status.Errorf(codes.FailedPrecondition,
		"removing %s would leave %d voters (%s) needing a quorum of %d, but the leader %s reaches only %d: heartbeats fail to %s; "+
			"bring them back first, or pass --force to remove anyway (the cluster may then stay without a leader)",
		remove, len(left), strings.Join(left, ", "), need, self, reached, strings.Join(down, ", "))
}

// catchUpBudget is how long AddCoordinator waits for a new node to catch
// up: what the caller's deadline leaves (less a margin to clean up), at
// most two minutes.
func catchUpBudget(ctx context.Context) time.Duration {
	const most, margin = 2 * time.Minute, 3 * time.Second
	dl, ok := ctx.Deadline()
	if !ok {
		return 30 * time.Second
	}
	d := time.Until(dl) - margin
	if d > most {
		d = most
	}
	if d < time.Second {
		d = time.Second
	}
	return d
}

// addNonvoterCaughtUp adds a node as a non-voter, waits until its Raft log
// reaches the index at which it was added, and promotes it to voter. A node
// that does not catch up in time is removed again: a voter that cannot
// replicate would count against the quorum (with one voter, for good).
func (s *Server) addNonvoterCaughtUp(ctx context.Context, id, raftAddr, apiAddr string) error {
	f := s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, applyTimeout)
	if err := f.Error(); err != nil {
		return raftError("raft add non-voter "+id, err)
	}
	target := f.Index()
	budget := catchUpBudget(ctx)
	s.log.Info("added a non-voter; waiting for it to catch up before promoting it", "name", id, "target_index", target, "within", budget)
	deadline := time.Now().Add(budget)
	var last uint64
	var lastErr error
	nextLog := time.Now().Add(2 * time.Second)
	for {
		idx, err := s.peerRaftIndex(ctx, apiAddr)
		if err == nil {
			last, lastErr = idx.GetLastLogIndex(), nil
			if idx.GetName() != "" && idx.GetName() != id {
				lastErr = fmt.Errorf("the coordinator at %s is %q, not %q", apiAddr, idx.GetName(), id)
			} else if last >= target {
				break
			}
		} else {
			lastErr = err
		}
		if time.Now().After(nextLog) {
			s.log.Info("waiting for the new coordinator to catch up", "name", id, "index", last, "target_index", target, "err", lastErr)
			nextLog = time.Now().Add(2 * time.Second)
		}
		if time.Now().After(deadline) || ctx.Err() != nil || !s.isLeader() {
			why := fmt.Sprintf("%s did not catch up within %s: its log reached index %d of %d", id, budget.Round(time.Second), last, target)
			if lastErr != nil {
				why += fmt.Sprintf(" (last error: %v)", lastErr)
			}
			if err := s.raft.RemoveServer(raft.ServerID(id), 0, applyTimeout).Error(); err != nil {
				return status.Errorf(codes.FailedPrecondition, "%s; removing the non-voter again failed too (%v): remove it with `pgdrctl coordinator remove --name %s`", why, err, id)
			}
			return status.Errorf(codes.FailedPrecondition, "%s; it was removed again. Check that it runs, that %s reaches its Raft address %s, and retry (a larger --timeout gives it longer)", why, s.cfg.Name, raftAddr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.log.Info("the new coordinator caught up; promoting it to voter", "name", id, "index", last)
	if err := s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, applyTimeout).Error(); err != nil {
		return raftError("raft promote "+id+" to voter", err)
	}
	return nil
}

// peerRaftIndex asks the coordinator at apiAddr how far its log reaches.
func (s *Server) peerRaftIndex(ctx context.Context, apiAddr string) (*pgdrv1.RaftIndexResponse, error) {
	return s.peerRaftIndexOf(ctx, apiAddr, "")
}

// peerRaftIndexOf asks the coordinator at apiAddr how far its log reaches
// and, when name is set, whether its latest configuration lists name.
func (s *Server) peerRaftIndexOf(ctx context.Context, apiAddr, name string) (*pgdrv1.RaftIndexResponse, error) {
	conn, err := s.conns.get(apiAddr)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return pgdrv1.NewCoordinatorServiceClient(conn).RaftIndex(cctx, &pgdrv1.RaftIndexRequest{Name: name})
}

// RaftIndex reports how far this node's Raft log reaches and, for a named
// server, whether its latest configuration lists it.
func (c *coordAPI) RaftIndex(ctx context.Context, req *pgdrv1.RaftIndexRequest) (*pgdrv1.RaftIndexResponse, error) {
	if c.s.raft == nil {
		return nil, outcome.NotSubmitted("raft is not running yet")
	}
	resp := &pgdrv1.RaftIndexResponse{Name: c.s.cfg.Name, LastLogIndex: c.s.raft.LastIndex(),
		AppliedIndex: c.s.fsm.LastIndex(), RaftState: c.s.raft.State().String(), FeatureLevel: FeatureLevel}
	if req.GetName() != "" {
		f := c.s.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return nil, status.Errorf(codes.Unavailable, "reading the raft configuration: %v", err)
		}
		resp.ListedAs = listedAs(f.Configuration(), req.GetName())
	}
	return resp, nil
}

// waitReady waits up to d for conn to be ready.
func waitReady(conn *grpc.ClientConn, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		if st == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, st) {
			return fmt.Errorf("no connection within %s (state %s)", d, st)
		}
	}
}
