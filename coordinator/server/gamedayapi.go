package server

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ListGameDays lists the game days recorded, by cluster, oldest first.
func (a *adminAPI) ListGameDays(ctx context.Context, req *pgdrv1.ListGameDaysRequest) (*pgdrv1.ListGameDaysResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	if err := checkName("cluster", req.GetCluster(), false); err != nil {
		return nil, err
	}
	out := &pgdrv1.ListGameDaysResponse{}
	for name, runs := range a.s.fsm.GameDayRuns(req.GetCluster()) {
		out.Clusters = append(out.Clusters, &pgdrv1.ClusterGameDays{Cluster: name, Runs: runs})
	}
	slices.SortFunc(out.Clusters, func(x, y *pgdrv1.ClusterGameDays) int { return strings.Compare(x.GetCluster(), y.GetCluster()) })
	return out, nil
}

// RunGameDay starts one of the cluster's policy's game days now (it takes
// no scheduled slot). A follower forwards it.
func (a *adminAPI) RunGameDay(ctx context.Context, req *pgdrv1.RunGameDayRequest) (*pgdrv1.RunGameDayResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	if err := checkName("name", req.GetName(), true); err != nil {
		return nil, err
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).RunGameDay(forwardCtx(ctx), req)
	}
	if !a.s.caughtUpLeader() {
		return nil, errCatchingUp
	}
	if err := a.incidentsReady(); err != nil {
		return nil, err
	}
	if ok, why := a.s.gameDaysReady(); !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "game days cannot run yet: %s", why)
	}
	c, ok := a.s.fsm.Cluster(req.GetCluster())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cluster %q is not known to the coordinators", req.GetCluster())
	}
	if p, _ := policy.Effective(c); !slices.ContainsFunc(p.GameDays, func(g policy.GameDay) bool { return g.Name == req.GetName() }) {
		return nil, status.Errorf(codes.NotFound, "game day %q is not in the policy of cluster %s (see 'pgdrctl policy show')", req.GetName(), c.GetName())
	}
	res, err := a.proposeRunbook(ctx, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_GameDayStart{GameDayStart: &pgdrv1.GameDayStart{
		Cluster: c.GetName(), Name: req.GetName()}}})
	if err != nil {
		return nil, err
	}
	out := &pgdrv1.RunGameDayResponse{}
	for _, r := range a.s.fsm.GameDayRuns(c.GetName())[c.GetName()] {
		if r.GetId() == fsm.GameDayRunID(res.GetIndex()) {
			out.Run = r
		}
	}
	return out, nil
}

// gameDaysAllowed checks a policy's game days against the replicated
// state: runbooks started (feature level 4: an older coordinator would
// ignore them), and each runbook known with parameters it accepts (a
// runbook changed or deleted later ends its game day failed instead).
func (s *Server) gameDaysAllowed(bp *pgdrv1.BackupPolicy) error {
	if len(bp.GetGameDays()) == 0 {
		return nil
	}
	if !s.fsm.IncidentsStarted() {
		return status.Error(codes.FailedPrecondition, "game_days cannot be set yet: runbooks are not started (a rolling upgrade in progress?)")
	}
	if ok, why := s.gameDaysReady(); !ok {
		return status.Errorf(codes.FailedPrecondition, "game_days cannot be set yet: %s", why)
	}
	for i, g := range bp.GetGameDays() {
		for j, want := range g.GetRunbooks() {
			field := fmt.Sprintf("game_days[%d].runbooks[%d]", i, j)
			var text string
			var found bool
			s.fsm.Read(func(st *pgdrv1.State) { text, found = fsm.RunbookText(st, want.GetName()) })
			if !found {
				return invalid(field+".name", "runbook %q is not known (apply it first; see 'pgdrctl runbook list')", clipText(want.GetName(), 64))
			}
			rb, err := runbook.Parse([]byte(text))
			if err == nil {
				_, err = runbook.Resolve(rb, want.GetParams())
			}
			if err != nil {
				return invalid(field+".params", "runbook %s: %v", want.GetName(), err)
			}
		}
	}
	return nil
}
