package server

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// GetBackupPolicy returns a cluster's effective backup policy (the
// defaults when none was set) from this coordinator's state: a follower
// answers too, at most a moment behind the leader.
func (a *adminAPI) GetBackupPolicy(ctx context.Context, req *pgdrv1.GetBackupPolicyRequest) (*pgdrv1.GetBackupPolicyResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	c, ok := a.s.fsm.Cluster(req.GetCluster())
	if !ok {
		return nil, a.clusterMustExist(req.GetCluster())
	}
	bp, isDefault := effectiveBackupPolicy(c)
	return &pgdrv1.GetBackupPolicyResponse{Cluster: c.GetName(), Policy: bp, IsDefault: isDefault}, nil
}

func effectiveBackupPolicy(c *pgdrv1.Cluster) (*pgdrv1.BackupPolicy, bool) {
	if bp := c.GetBackupPolicy(); bp != nil {
		return bp, false
	}
	return policy.ToProto(policy.Default()), true
}

// SetBackupPolicy replaces a cluster's backup policy, or resets it to the
// defaults. The whole policy is validated here (schedules, time zones,
// retention against each schedule's interval, a full tier for diff and
// incr ones; every error naming its field) before anything is written, so
// bad input changes nothing. Repository names are checked for form only:
// the coordinators do not know the agents' repositories, and an agent
// refuses a run to one it does not have. A follower forwards the call so
// that the answer reflects the committed policy.
func (a *adminAPI) SetBackupPolicy(ctx context.Context, req *pgdrv1.SetBackupPolicyRequest) (*pgdrv1.SetBackupPolicyResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	var bp *pgdrv1.BackupPolicy
	switch {
	case req.GetResetToDefaults() && req.GetPolicy() != nil:
		return nil, invalid("policy", "give a policy or reset_to_defaults, not both")
	case !req.GetResetToDefaults() && req.GetPolicy() == nil:
		return nil, invalid("policy", "required (or reset_to_defaults)")
	case req.GetPolicy() != nil:
		if n := proto.Size(req.GetPolicy()); n > policy.MaxFileSize {
			return nil, invalid("policy", "%d bytes encoded, at most %d", n, policy.MaxFileSize)
		}
		p := policy.FromProto(req.GetPolicy())
		p.UpdatedAt, p.UpdatedBy = time.Time{}, ""
		p.Normalize()
		if err := p.Validate(policy.Options{}); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "backup policy of cluster %s: %v", req.GetCluster(), err)
		}
		bp = policy.ToProto(p)
	}
	// The cluster is looked up on the leader: a follower may not have
	// applied its registration yet.
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).SetBackupPolicy(forwardCtx(ctx), req)
	}
	old, ok := a.s.fsm.Cluster(req.GetCluster())
	if !ok {
		return nil, a.clusterMustExist(req.GetCluster())
	}
	if err := a.s.drillPolicyAllowed(bp); err != nil {
		return nil, err
	}
	if err := a.s.gameDaysAllowed(bp); err != nil {
		return nil, err
	}
	if _, err := a.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY,
		&pgdrv1.SetBackupPolicy{Cluster: req.GetCluster(), Policy: bp}, requester(ctx)); err != nil {
		return nil, err
	}
	c, _ := a.s.fsm.Cluster(req.GetCluster())
	now, isDefault := effectiveBackupPolicy(c)
	return &pgdrv1.SetBackupPolicyResponse{Cluster: c.GetName(), Policy: now, IsDefault: isDefault,
		Changed: !proto.Equal(old.GetBackupPolicy(), c.GetBackupPolicy())}, nil
}
