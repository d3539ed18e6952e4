package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/schedule"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// schedServer is the server as the backup scheduler (coordinator/schedule)
// sees it: the replicated clusters with their members as the leader
// judges them, Raft writes, and the agents' command streams.
type schedServer struct{ s *Server }

var _ schedule.Server = schedServer{}

func (ss schedServer) ClusterNames() []string {
	var names []string
	ss.s.fsm.Read(func(st *pgdrv1.State) {
		for n := range st.GetClusters() {
			names = append(names, n)
		}
	})
	slices.Sort(names)
	return names
}

func (ss schedServer) Cluster(name string) (*pgdrv1.Cluster, bool) { return ss.s.fsm.Cluster(name) }

func (ss schedServer) Members(c *pgdrv1.Cluster) []schedule.Member {
	var members []schedule.Member
	for _, cs := range ss.s.statusOf(c) {
		for _, ms := range cs.GetMembers() {
			role := ms.GetRole()
			members = append(members, schedule.Member{Name: ms.GetName(), Role: role, Healthy: ms.GetHealthy(),
				LagBytes: ms.GetLagBytes(), Connectable: role == RolePrimary || role == RoleReplica, Fenced: role == RoleFenced})
		}
	}
	return members
}

// Record proposes the run record with ignore_if_unknown: a coordinator
// that predates backup runs skips it instead of stopping (it runs no
// scheduler, and the records are not safety state).
func (ss schedServer) Record(ctx context.Context, actor string, rec *pgdrv1.RecordBackupRun) error {
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RECORD_BACKUP_RUN, rec, actor, time.Now())
	if err != nil {
		return status.Errorf(codes.Internal, "encoding command: %v", err)
	}
	cmd.IgnoreIfUnknown = true
	_, err = ss.s.proposeCommand(ctx, cmd)
	return err
}

func (ss schedServer) Order(_ context.Context, cmd *pgdrv1.AgentCommand) error {
	if !ss.s.hub.send(memberKey{cmd.GetCluster(), cmd.GetNode()}, cmd) {
		return fmt.Errorf("the agent of %s: %w", cmd.GetNode(), errNoStream)
	}
	return nil
}

// answerBackup hands an agent's answer to the scheduler, which records it
// when it is about a backup run in flight.
func (s *Server) answerBackup(ctx context.Context, r *pgdrv1.CommandResult) {
	if s.sched == nil { // tests that build a Server by hand
		return
	}
	ok, err := s.sched.Answer(ctx, r)
	if ok && err != nil {
		s.log.Warn("recording a backup run's answer", "cluster", r.GetCluster(), "node", r.GetNode(), "run", r.GetId(), "err", err)
	}
}

// ListBackupRuns lists the recorded backup runs from this coordinator's
// state (a follower answers too, at most a moment behind the leader).
func (a *adminAPI) ListBackupRuns(ctx context.Context, req *pgdrv1.ListBackupRunsRequest) (*pgdrv1.ListBackupRunsResponse, error) {
	if err := checkName("cluster", req.GetCluster(), false); err != nil {
		return nil, err
	}
	if req.GetCluster() != "" {
		if err := a.clusterMustExist(req.GetCluster()); err != nil {
			return nil, err
		}
	}
	out := &pgdrv1.ListBackupRunsResponse{}
	clusters := a.s.fsm.Clusters()
	names := make([]string, 0, len(clusters))
	for n := range clusters {
		if req.GetCluster() == "" || n == req.GetCluster() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		out.Clusters = append(out.Clusters, &pgdrv1.ClusterBackupRuns{Cluster: n, Runs: clusters[n].GetBackupRuns()})
	}
	return out, nil
}

// RunBackup has the leader run a tier now. It is refused for an unknown
// tier (naming the known ones), while another backup of the cluster runs
// (naming it), and when no member can take it; a follower forwards it.
// The answer is the run as recorded: the order went out, or the run
// already ended as failed when it could not be sent (its error says why).
func (a *adminAPI) RunBackup(ctx context.Context, req *pgdrv1.RunBackupRequest) (*pgdrv1.RunBackupResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	if err := checkName("tier", req.GetTier(), true); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).RunBackup(forwardCtx(ctx), req)
	}
	if !a.s.caughtUpLeader() {
		return nil, errCatchingUp
	}
	if err := a.clusterMustExist(req.GetCluster()); err != nil {
		return nil, err
	}
	run, err := a.s.sched.RunNow(ctx, req.GetCluster(), req.GetTier(), requester(ctx))
	switch {
	case errors.Is(err, schedule.ErrUnknownTier):
		return nil, invalid("tier", "%v", err)
	case errors.Is(err, schedule.ErrBusy), errors.Is(err, schedule.ErrNoCandidate):
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s: %v", req.GetCluster(), err)
	case err != nil:
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Internal, "cluster %s: %v", req.GetCluster(), err)
	}
	if c, ok := a.s.fsm.Cluster(req.GetCluster()); ok {
		for _, br := range c.GetBackupRuns() {
			if br.GetId() == run.GetId() {
				run = br
			}
		}
	}
	return &pgdrv1.RunBackupResponse{Run: run}, nil
}
