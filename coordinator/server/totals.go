package server

import (
	"context"
	"time"

	"github.com/pgdr/pgdr/coordinator/fsm"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// totalsFeatureLevel: the voters know StartTotals. The clusters' totals
// (the counters pgdr_cluster_primary_changes_total and
// pgdr_backup_runs_total serve) are counted only from a StartTotals
// command on, proposed once every voter knows it: a node restoring an
// older coordinator's snapshot (no totals) and counting from there would
// count from its own snapshot's index, and the nodes' totals would differ.
const totalsFeatureLevel = 3

// startTotalsRetry: how often the leader tries again to start the totals.
const startTotalsRetry = 5 * time.Second

// startTotals proposes StartTotals once the totals are not counted yet
// and every server of the Raft configuration knows the command (as the
// backup scheduler's gate asks: gossip, or the server itself), at most
// every startTotalsRetry. Asking a server may wait on the network, so the
// leader loop does not: the check and the proposal run on their own.
func (s *Server) startTotals(ctx context.Context, now time.Time) {
	var started bool
	s.fsm.Read(func(st *pgdrv1.State) { started = st.GetTotalsSinceIndex() != 0 })
	if started {
		return
	}
	s.totalsMu.Lock()
	if now.Sub(s.totalsTried) < startTotalsRetry && !s.totalsTried.IsZero() {
		s.totalsMu.Unlock()
		return
	}
	s.totalsTried = now
	s.totalsMu.Unlock()
	go s.proposeStartTotals(ctx, now)
}

func (s *Server) proposeStartTotals(ctx context.Context, now time.Time) {
	servers := s.voters()
	levels := peerLevels(s.cfg.Name, servers, s.featureLevels(), s.askLevel)
	if ok, why := votersReadyFor(s.cfg.Name, servers, levels, totalsFeatureLevel, "counting the totals"); !ok {
		s.log.Debug("totals not counted yet", "why", why)
		return
	}
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_START_TOTALS, &pgdrv1.StartTotals{}, "coordinator:"+s.cfg.Name, now)
	if err != nil {
		s.log.Error("encoding StartTotals", "err", err)
		return
	}
	cmd.IgnoreIfUnknown = true
	if _, err := s.proposeCommand(ctx, cmd); err != nil && ctx.Err() == nil {
		s.log.Warn("starting the totals", "err", err)
	}
}
