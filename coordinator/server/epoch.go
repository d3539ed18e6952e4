package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// epochBarrier bounds the barrier an Epoch answer waits for.
const epochBarrier = 3 * time.Second

// Epoch tells an agent the cluster's current epoch and primary. The agent
// asks right before pg_promote, so the answer must not come from a state
// machine behind the log: a barrier first applies everything committed
// (and fails on a node that no longer leads). The answer carries the
// leader's clock, read after the barrier: the agent checks the order's
// deadline, set on this clock, against it rather than against its own;
// and, for the order the agent asks about (command_id) if this leader
// still waits for it, the time left on this leader's monotonic clock,
// which a step of its wall clock does not move.
func (a *agentAPI) Epoch(ctx context.Context, req *pgdrv1.EpochRequest) (*pgdrv1.EpochResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	if err := checkName("node", req.GetNode(), true); err != nil {
		return nil, err
	}
	if err := checkCaller(ctx, req.GetCluster(), req.GetNode()); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		return nil, a.notLeader()
	}
	if err := a.s.raft.Barrier(epochBarrier).Error(); err != nil {
		a.s.log.Warn("epoch query: barrier failed", "cluster", req.GetCluster(), "node", req.GetNode(), "err", err)
		return nil, a.notLeader()
	}
	if err := a.registered(req.GetCluster(), req.GetNode()); err != nil {
		return nil, err
	}
	_, primary, epoch := a.s.fsm.MemberEpoch(req.GetCluster(), req.GetNode())
	now := time.Now()
	resp := &pgdrv1.EpochResponse{Epoch: epoch, Primary: primary, Now: timestamppb.New(now)}
	if id := req.GetCommandId(); id != "" {
		resp.Leader = a.s.cfg.Name
		if left, ok := a.s.hub.commandLeft(memberKey{req.GetCluster(), req.GetNode()}, id, now); ok {
			resp.CommandWaiting, resp.CommandLeftMs = true, left.Milliseconds()
		}
	}
	return resp, nil
}
