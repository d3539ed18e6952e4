package server

import (
	"context"
	"fmt"
	"time"

	"github.com/pgdr/pgdr/coordinator/divergence"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/incident"
	"github.com/pgdr/pgdr/pkg/divergenceid"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Divergence reports: a former primary makes one before a rejoin order
// rewinds or re-clones it (agent/divergence) and returns its summary with
// the order's result. The leader records it where the failover is
// recorded: a history event of kind divergence at the order's epoch, with
// the bounded summary in its details (coordinator/divergence: only
// summaries in Raft, the full report and the raw WAL in the
// repositories), and a note on the cluster's failover incident. Both
// through existing commands (RecordEvent, IncidentCommand note): nothing
// new for an older voter to apply, so no feature level.

// recordDivergence records the divergence report res carries, if any,
// sent by node for a rejoin at epoch. A report that says what the last one
// of node at epoch said (a rejoin tried again reads the same WAL) is not
// recorded again.
func (s *Server) recordDivergence(ctx context.Context, cluster, node string, epoch uint64, res *pgdrv1.CommandResult) {
	d := res.GetDivergence()
	if d == nil {
		return
	}
	if err := divergenceid.Check(d.GetId()); err != nil {
		s.log.Warn("divergence report not recorded: its id", "cluster", cluster, "node", node, "err", err)
		return
	}
	// Everything recorded is built from the bounded summary: what an
	// agent sent may be any size.
	d, _, err := divergence.Bounded(d)
	if err != nil {
		s.log.Warn("divergence report not recorded", "cluster", cluster, "node", node, "err", err)
		return
	}
	var last *pgdrv1.DivergenceSummary
	s.fsm.ScanHistoryBack(cluster, func(ev *pgdrv1.HistoryEvent) bool {
		if ev.GetKind() != divergence.Kind || ev.GetNode() != node {
			return true
		}
		if ev.GetEpoch() == epoch {
			last, _ = divergence.FromEvent(ev)
		}
		return false
	})
	if last != nil && divergence.Same(last, d) {
		return
	}
	details, err := divergence.Details(d)
	if err != nil {
		s.log.Warn("divergence report not recorded", "cluster", cluster, "node", node, "err", err)
		return
	}
	msg := divergence.Message(node, d)
	s.recordEvent(ctx, cluster, divergence.Kind, node, epoch, msg, details)
	if !divergence.Replica(d) { // a replica's is not its lost commits
		s.noteFailoverIncident(ctx, cluster, msg)
	}
}

// noteFailoverIncident adds msg as a note to the incident of the failover
// that made the current primary: the newest change of primary in the
// cluster's history must be an automatic failover (a switchover or a
// manual failover opens no incident), and the note goes to the failover
// incident that intent opened or folded into. Nothing when incidents are not started or no
// such incident is kept.
func (s *Server) noteFailoverIncident(ctx context.Context, cluster, msg string) {
	if !s.fsm.IncidentsStarted() {
		return
	}
	var change *pgdrv1.HistoryEvent
	s.fsm.ScanHistoryBack(cluster, func(ev *pgdrv1.HistoryEvent) bool {
		if replacesPrimary(ev.GetKind()) {
			change = ev
			return false
		}
		return true
	})
	if change == nil || change.GetKind() != kindFailoverIntent {
		return
	}
	key, since := "failover:"+cluster, change.GetTime().AsTime()
	var id string
	var seq uint64
	for _, in := range s.fsm.Incidents(cluster, true, "") {
		// Opened by the failover's intent, or folded it in (last seen).
		if in.GetDedupKey() == key && !in.GetLastSeen().AsTime().Before(since) && in.GetSeq() >= seq {
			id, seq = in.GetId(), in.GetSeq()
		}
	}
	if id == "" {
		return
	}
	lim := incident.DefaultLimits()
	if r := []rune(msg); len(r) > lim.MaxMessage {
		msg = string(r[:lim.MaxMessage-1]) + "…"
	}
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_INCIDENT, &pgdrv1.IncidentCommand{
		Op: &pgdrv1.IncidentCommand_Note{Note: &pgdrv1.IncidentTransition{Id: id, Note: msg}},
	}, "coordinator:"+s.cfg.Name, time.Now())
	if err != nil {
		s.log.Error("encoding the divergence note", "err", err)
		return
	}
	cmd.IgnoreIfUnknown = true
	res, err := s.proposeCommand(ctx, cmd)
	if err == nil && !res.GetOk() {
		err = fmt.Errorf("%s", res.GetError())
	}
	if err != nil {
		s.log.Warn("divergence report: note on the failover incident", "cluster", cluster, "incident", id, "err", err)
	}
}
