package server

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DefaultReportPeriod is the compliance report's period when none is given.
const DefaultReportPeriod = 30 * 24 * time.Hour

// Report assembles the compliance report on the leader (a follower
// forwards it): per cluster, targets against measured values, backups per
// tier, drills, failovers and switchovers with their measured durations,
// and the open breaches.
func (a *adminAPI) Report(ctx context.Context, req *pgdrv1.ReportRequest) (*pgdrv1.ReportResponse, error) {
	if err := checkName("cluster", req.GetCluster(), false); err != nil {
		return nil, err
	}
	if req.GetCluster() != "" {
		if err := a.clusterMustExist(req.GetCluster()); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	since := now.Add(-DefaultReportPeriod)
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		since = req.GetSince().AsTime()
		if since.After(now) {
			return nil, status.Errorf(codes.InvalidArgument, "since: %s is in the future", since.UTC().Format(time.RFC3339))
		}
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).Report(ctx, req)
	}
	clusters := a.s.fsm.Clusters()
	out := &pgdrv1.ReportResponse{Time: timestamppb.New(now), Since: timestamppb.New(since), AnsweredBy: a.s.cfg.Name}
	for _, n := range sortedNames(clusters, req.GetCluster()) {
		out.Clusters = append(out.Clusters, a.s.clusterReport(clusters[n], since, now))
	}
	return out, nil
}

// sortedNames are the names of clusters, sorted; only one when only is set.
func sortedNames(clusters map[string]*pgdrv1.Cluster, only string) []string {
	names := make([]string, 0, len(clusters))
	for n := range clusters {
		if only == "" || n == only {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// clusterReport is one cluster's section of the report.
func (s *Server) clusterReport(c *pgdrv1.Cluster, since, now time.Time) *pgdrv1.ClusterReport {
	name := c.GetName()
	events, oldest := s.clusterEventsFrom(name)
	samples := s.view.snapshotCluster(name)
	cp, _, _ := s.complianceOf(c, samples, events, now)
	cp.WriteAvailability = s.writeAvailability(c, samples, now)
	r := &pgdrv1.ClusterReport{Name: name, Compliance: cp, Backups: tierBackups(c, since), HistoryFrom: oldest}
	r.Drills = &pgdrv1.DrillSummary{Note: "no drill recorded"}
	if s.comp != nil && s.comp.drills != nil {
		if d := s.comp.drills.LastDrill(name); d.Recorded {
			r.Drills = &pgdrv1.DrillSummary{Recorded: true, Last: &pgdrv1.RTOMeasure{Source: compliance.SourceDrill, Recorded: true,
				Seconds: d.Seconds, At: timestamppb.New(d.At)}}
		}
	}
	// Game days started in the period (or still running), with their
	// measured write unavailability.
	for _, g := range c.GetGameDayRuns() {
		if g.GetResult() == "" || !g.GetStarted().AsTime().Before(since) {
			r.GameDays = append(r.GameDays, proto.Clone(g).(*pgdrv1.GameDayRun))
		}
	}
	// Drills ended in the period, passed and failed (a cluster whose drills
	// all failed has no restore time, but its failures are reported).
	for _, dr := range c.GetDrillRuns() {
		if dr.GetFinishedAt() == nil || dr.GetFinishedAt().AsTime().Before(since) {
			continue
		}
		switch {
		case dr.GetResult() == "ok" && dr.GetReport().GetOk():
			r.Drills.Ok++
		case dr.GetResult() != "not_started":
			r.Drills.Failed++
		}
	}
	if r.Drills.Ok+r.Drills.Failed > 0 && !r.Drills.Recorded {
		r.Drills.Recorded, r.Drills.Note = true, "no drill passed"
	}
	for _, rc := range compliance.Recoveries(events) {
		if rc.Started.Before(since) {
			continue
		}
		ev := &pgdrv1.RecoveryEvent{Kind: rc.Kind, Node: rc.Node, OldPrimary: rc.OldPrimary, Epoch: rc.Epoch,
			Started: timestamppb.New(rc.Started), Measured: rc.Measured, Ok: rc.OK, Result: rc.Result}
		if rc.Measured {
			ev.Writable, ev.DurationSeconds = timestamppb.New(rc.Writable), rc.Duration.Seconds()
		}
		r.Recoveries = append(r.Recoveries, ev)
	}
	return r
}

// tierBackups sums the recorded backup runs started since, per tier of
// the effective policy (then any other tier the runs name).
func tierBackups(c *pgdrv1.Cluster, since time.Time) []*pgdrv1.TierBackups {
	p, _ := policy.Effective(c)
	byTier := map[string]*pgdrv1.TierBackups{}
	var order []string
	tier := func(name string) *pgdrv1.TierBackups {
		if t, ok := byTier[name]; ok {
			return t
		}
		t := &pgdrv1.TierBackups{Tier: name, Verification: "not recorded"}
		byTier[name] = t
		order = append(order, name)
		return t
	}
	for _, t := range p.Tiers {
		tier(t.Name)
	}
	for _, run := range c.GetBackupRuns() {
		if run.GetStartedAt() == nil || run.GetStartedAt().AsTime().Before(since) {
			continue
		}
		t := tier(run.GetTier())
		switch run.GetResult() {
		case "":
			t.Running++
		case "ok":
			t.Ok++
			if t.LastOk == nil || run.GetFinishedAt().AsTime().After(t.LastOk.AsTime()) {
				t.LastOk, t.LastOkBackup = run.GetFinishedAt(), run.GetBackupId()
			}
		case "failed", "timeout", "cancelled":
			t.Failed++
		}
	}
	out := make([]*pgdrv1.TierBackups, 0, len(order))
	for _, n := range order {
		out = append(out, byTier[n])
	}
	return out
}
