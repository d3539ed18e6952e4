package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hashicorp/raft"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/schedule"
	"github.com/pgdr/pgdr/pkg/gossip"
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
		members = append(members, membersOf(cs, ss.s.hub.hasStream)...)
	}
	return members
}

// membersOf is the scheduler's view of a cluster's status: each member's
// timeline and replay lag (the primary's LSN − its replay LSN; -1 when
// either is unknown), and whether its agent's command stream is open.
func membersOf(cs *pgdrv1.ClusterStatus, stream func(memberKey) bool) []schedule.Member {
	var primaryLSN uint64
	for _, ms := range cs.GetMembers() {
		if ms.GetName() == cs.GetPrimary() && ms.GetRole() == RolePrimary {
			primaryLSN = ms.GetLsn()
		}
	}
	var members []schedule.Member
	for _, ms := range cs.GetMembers() {
		role := ms.GetRole()
		m := schedule.Member{Name: ms.GetName(), Role: role, Healthy: ms.GetHealthy(), LagBytes: ms.GetLagBytes(),
			Connectable: role == RolePrimary || role == RoleReplica, Fenced: role == RoleFenced,
			Timeline: ms.GetTimeline(), ReplayLag: -1, Stream: stream(memberKey{cs.GetName(), ms.GetName()})}
		switch {
		case role == RolePrimary:
			m.ReplayLag = 0
		case primaryLSN > 0 && ms.GetReplayLsn() > 0:
			m.ReplayLag = int64(primaryLSN - min(primaryLSN, ms.GetReplayLsn()))
		}
		members = append(members, m)
	}
	return members
}

// FeatureLevel is this coordinator's feature level, advertised in its
// gossip metadata: 1 knows RecordBackupRun with its cancel step, the
// not_started result, the type taken and the expiry outcome; 2 also
// RecordDrillRun (restore drills run only at drillFeatureLevel); 3 also
// RecordWriteSeconds (recorded only at sloFeatureLevel) and StartTotals
// (the totals are counted from it, totalsFeatureLevel); 4 also
// IncidentCommand (incidents are derived from StartIncidents on,
// incidentsFeatureLevel); 5 also RunbookCommand (runbooksFeatureLevel);
// 6 also its game day operations and RunbookStart.game_day
// (gameDaysFeatureLevel). The backup
// scheduler runs only when every voter advertises at least
// schedFeatureLevel: its records are proposed ignore_if_unknown, and an
// older voter that skipped them would diverge.
const FeatureLevel = 6

const schedFeatureLevel = 1

func (ss schedServer) Leading() bool { return ss.s.caughtUpLeader() }

// Ready: every Raft voter advertises (gossip metadata, as last heard of)
// a feature level that knows the scheduler's records.
func (ss schedServer) Ready() (bool, string) {
	servers := ss.s.voters()
	return votersReady(ss.s.cfg.Name, servers, peerLevels(ss.s.cfg.Name, servers, ss.s.featureLevels(), ss.s.askLevel))
}

// levelTTL is how long a feature level asked of a peer is believed.
const levelTTL = 30 * time.Second

// askLevel is the feature level of coordinator name as its RaftIndex
// answers it (cached for levelTTL, success or not, so that the
// scheduler's ticks do not ask every time); false when it cannot be
// asked (no known API address, not reachable).
func (s *Server) askLevel(name string) (int, bool) {
	s.levelMu.Lock()
	if c, ok := s.levels[name]; ok && time.Since(c.at) < levelTTL {
		s.levelMu.Unlock()
		return c.level, c.ok
	}
	s.levelMu.Unlock()
	addr := ""
	for _, c := range s.fsm.Coordinators() {
		if c.GetName() == name {
			addr = c.GetApiAddress()
		}
	}
	for _, p := range s.cfg.Bootstrap {
		if addr == "" && p.Name == name {
			addr = p.APIAddress
		}
	}
	c := askedLevel{at: time.Now()}
	if addr != "" {
		if resp, err := s.peerRaftIndex(context.Background(), addr); err == nil && resp.GetName() == name {
			c.level, c.ok = int(resp.GetFeatureLevel()), true
		}
	}
	s.levelMu.Lock()
	if s.levels == nil {
		s.levels = map[string]askedLevel{}
	}
	if len(s.levels) > 256 { // bounded: the servers of the configuration
		clear(s.levels)
	}
	s.levels[name] = c
	s.levelMu.Unlock()
	return c.level, c.ok
}

// askedLevel is a feature level asked of a peer, and when.
type askedLevel struct {
	level int
	ok    bool
	at    time.Time
}

// votersReady checks each voter's level (self is FeatureLevel).
func votersReady(self string, voters []string, levels map[string]int) (bool, string) {
	return votersReadyFor(self, voters, levels, schedFeatureLevel, "the backup scheduler")
}

// votersReadyFor checks each voter's level against need, for what.
func votersReadyFor(self string, voters []string, levels map[string]int, need int, what string) (bool, string) {
	if len(voters) == 0 {
		return false, "the Raft configuration is not known"
	}
	for _, v := range voters {
		lvl, ok := levels[v]
		if v == self {
			lvl, ok = FeatureLevel, true
		}
		switch {
		case !ok:
			return false, fmt.Sprintf("the feature level of voter %s is not known (not heard of by gossip): it may not know the records of %s", v, what)
		case lvl < need:
			return false, fmt.Sprintf("voter %s has feature level %d, %s needs %d (a rolling upgrade is in progress?)", v, lvl, what, need)
		}
	}
	return true, ""
}

// voters are the names of the servers that apply the Raft log (the gate
// counts them all: see logServers).
func (s *Server) voters() []string {
	if s.raft == nil {
		return nil
	}
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return nil
	}
	return logServers(cf.Configuration())
}

// logServers are the names of cf's servers, voters or not: a non-voter
// (a coordinator catching up before its promotion) applies the log too,
// and an older one would refuse or drop the scheduler's records.
func logServers(cf raft.Configuration) []string {
	out := make([]string, 0, len(cf.Servers))
	for _, srv := range cf.Servers {
		out = append(out, string(srv.ID))
	}
	return out
}

// peerLevels completes levels (from gossip) with the level of each of
// servers gossip does not know, asked with ask (false: not reachable, it
// stays unknown). Self is not asked.
func peerLevels(self string, servers []string, levels map[string]int, ask func(name string) (int, bool)) map[string]int {
	for _, n := range servers {
		if _, ok := levels[n]; ok || n == self {
			continue
		}
		if lvl, ok := ask(n); ok {
			levels[n] = lvl
		}
	}
	return levels
}

// featureLevels are the coordinators' advertised feature levels, as the
// gossip pool last heard of them.
func (s *Server) featureLevels() map[string]int {
	out := map[string]int{}
	if s.pool == nil {
		return out
	}
	for _, p := range s.pool.Members() {
		if p.Meta.Kind == gossip.KindCoordinator {
			out[p.Meta.Name] = p.Meta.Features
		}
	}
	return out
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
// when it is about a backup run in flight. An answer that was not
// recorded and must come again (schedule.ErrRetry) is an Unavailable
// error, which the agent's Complete retries (to the leader).
func (s *Server) answerBackup(ctx context.Context, r *pgdrv1.CommandResult) error {
	if s.sched == nil { // tests that build a Server by hand
		return nil
	}
	_, err := s.sched.Answer(ctx, r)
	if err != nil {
		s.log.Warn("a backup run's answer was not recorded: the agent sends it again", "cluster", r.GetCluster(), "node", r.GetNode(), "run", r.GetId(), "err", err)
		return status.Errorf(codes.Unavailable, "%v", err)
	}
	return nil
}

// ListBackupRuns lists the recorded backup runs from this coordinator's
// state (a follower answers too, at most a moment behind the leader).
func (a *adminAPI) ListBackupRuns(ctx context.Context, req *pgdrv1.ListBackupRunsRequest) (*pgdrv1.ListBackupRunsResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	names, clusters, err := a.listed(req.GetCluster())
	if err != nil {
		return nil, err
	}
	out := &pgdrv1.ListBackupRunsResponse{}
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
	case errors.Is(err, schedule.ErrBusy), errors.Is(err, schedule.ErrNoCandidate), errors.Is(err, schedule.ErrNotReady):
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

// CancelBackupRun ends a backup run in flight as cancelled (the actor and
// note in its error) and sends its agent a cancel order: the way out of
// a run that would otherwise wait for its timeout (its agent gone for
// good). A follower forwards it.
func (a *adminAPI) CancelBackupRun(ctx context.Context, req *pgdrv1.CancelBackupRunRequest) (*pgdrv1.CancelBackupRunResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	if len(req.GetRunId()) > 64 {
		return nil, invalid("run_id", "at most 64 bytes")
	}
	if len(req.GetNote()) > 1024 {
		return nil, invalid("note", "at most 1024 bytes")
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).CancelBackupRun(forwardCtx(ctx), req)
	}
	if !a.s.caughtUpLeader() {
		return nil, errCatchingUp
	}
	if err := a.clusterMustExist(req.GetCluster()); err != nil {
		return nil, err
	}
	run, err := a.s.sched.Cancel(ctx, req.GetCluster(), req.GetRunId(), requester(ctx), req.GetNote())
	switch {
	case errors.Is(err, schedule.ErrNoRun):
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	case err != nil:
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Internal, "cluster %s: %v", req.GetCluster(), err)
	}
	return &pgdrv1.CancelBackupRunResponse{Run: run}, nil
}
