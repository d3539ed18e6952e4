package server

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/ctl"
	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// statusPageData is what status.html shows. Every value is text already
// formatted the way `pgdrctl status` and `report` print it; html/template
// escapes it.
type statusPageData struct {
	Coordinator string // the coordinator serving the page
	Now         string
	Refresh     int // seconds
	Viewer      string
	Logout      bool
	// Source says whose memory the health came from.
	Source string
	// Degraded: health, lag and lease are not shown (no leader answered),
	// and why; the replicated state is.
	Degraded string
	// Unavailable: nothing is shown, and why.
	Unavailable  string
	Coordinators []ctl.CoordinatorJSON
	Warnings     []string
	Regions      []regionView
	NoClusters   bool
	History      []ctl.EventJSON
	HistoryNote  string
}

// Title is the page's title (layout.html).
func (d statusPageData) Title() string { return "pgdr status: " + d.Coordinator }

// regionView is the clusters whose primary is in one region.
type regionView struct {
	Region   string
	Clusters []clusterView
}

type clusterView struct {
	Name         string
	Primary      string
	Epoch        uint64
	Paused       bool
	PausedReason string
	Failover     string
	Members      []memberView
	Compliance   *complianceView
	Backups      []backupView
	BackupsNote  string
}

type memberView struct {
	Name, Region, Role string
	Primary            bool
	// Health: "healthy", "UNHEALTHY" or "unknown"; HealthClass styles it.
	Health, HealthClass  string
	LagBytes, LagSeconds string
	Lease                string
	ReportAge            string
	Problems             string
}

type complianceView struct {
	Targets  ctl.TargetsJSON
	Rows     []targetRow
	Breaches []ctl.BreachJSON
}

// targetRow is one measured value against its target, as in the report.
type targetRow struct {
	Name, Limit, Measured, State string
	Breached                     bool
}

type backupView struct {
	Tier, Schedule, LastOK, Age, Backup string
	OK, Failed, Running                 uint32
	Stale                               bool
}

// statusPage gathers the page: Status as `pgdrctl status` gets it (a
// follower forwards it to the leader, whose memory holds the health), the
// backups per tier as the report sums them and the newest history events,
// both from this coordinator's replicated state. When no leader answers, a
// follower whose state is readable shows that state without health; one
// whose state is not readable says so and shows nothing.
func (s *Server) statusPage(ctx context.Context, now time.Time) statusPageData {
	d := statusPageData{Coordinator: s.cfg.Name, Now: now.UTC().Format(time.RFC3339)}
	sctx, cancel := context.WithTimeout(ctx, uiStatusTimeout)
	defer cancel()
	resp, err := (&adminAPI{s: s}).Status(sctx, &pgdrv1.StatusRequest{})
	readErr := s.stateReadable()
	if err != nil {
		if readErr != nil {
			d.Unavailable = fmt.Sprintf("%s cannot show the state: no Raft leader answered (%s), and its own copy of the replicated state may be behind (%s). Ask another coordinator%s.",
				s.cfg.Name, grpcMessage(err), grpcMessage(readErr), s.otherCoordinators())
			return d
		}
		d.Degraded = fmt.Sprintf("No Raft leader answered (%s). Health, lag and leases live in the leader's memory and are not shown; primaries, members, backups and history come from %s's replicated state.",
			grpcMessage(err), s.cfg.Name)
		resp = &pgdrv1.StatusResponse{Coordinators: s.coordinatorStatus(), Clusters: s.clusterStatus("")}
	}
	v := ctl.StatusView(resp, s.cfg.Name)
	d.Coordinators = v.Coordinators
	for _, w := range v.Warnings {
		d.Warnings = append(d.Warnings, w.Message)
	}
	switch {
	case d.Degraded != "":
		d.Source = s.cfg.Name + "'s replicated state (no health)"
	case v.AnsweredBy == s.cfg.Name:
		d.Source = "the leader " + s.cfg.Name + " (this coordinator)"
	default:
		d.Source = "the leader " + v.AnsweredBy + " (asked by " + s.cfg.Name + ")"
	}

	// The backups per tier, read in place (no copy of every cluster).
	var backups map[string][]backupView
	if readErr == nil {
		backups = map[string][]backupView{}
		s.fsm.Read(func(st *pgdrv1.State) {
			for name, c := range st.GetClusters() {
				backups[name] = backupsPageView(c, now)
			}
		})
		events := s.fsm.History("", 0, uiHistory)
		h := ctl.HistoryView(&pgdrv1.HistoryResponse{Events: events}).Events
		slices.Reverse(h) // newest first
		d.History = h
	} else {
		d.HistoryNote = fmt.Sprintf("Backups and history are not shown: %s's copy of the replicated state may be behind (%s).", s.cfg.Name, grpcMessage(readErr))
	}

	byRegion := map[string][]clusterView{}
	for _, c := range v.Clusters {
		cv := clusterView{Name: c.Name, Primary: c.Primary, Epoch: c.Epoch, Paused: c.Paused, PausedReason: c.PausedReason, Failover: c.Failover}
		region := ""
		for _, m := range c.Members {
			mv := memberPageView(m, c, d.Degraded != "", now)
			if mv.Primary {
				region = m.Region
			}
			cv.Members = append(cv.Members, mv)
		}
		if c.Compliance != nil && d.Degraded == "" {
			cv.Compliance = compliancePageView(*c.Compliance)
		}
		if b, ok := backups[c.Name]; ok {
			cv.Backups = b
			if len(cv.Backups) == 0 {
				cv.BackupsNote = "no backup tier configured and no backup run recorded"
			}
		} else if readErr == nil {
			cv.BackupsNote = "not in this coordinator's replicated state yet"
		}
		if region == "" {
			region = "no primary"
		}
		byRegion[region] = append(byRegion[region], cv)
	}
	for r, cs := range byRegion {
		d.Regions = append(d.Regions, regionView{Region: r, Clusters: cs})
	}
	slices.SortFunc(d.Regions, func(a, b regionView) int { return cmp.Compare(a.Region, b.Region) })
	d.NoClusters = len(v.Clusters) == 0
	return d
}

func memberPageView(m ctl.MemberJSON, c ctl.ClusterJSON, degraded bool, now time.Time) memberView {
	mv := memberView{Name: m.Name, Region: dashIfEmpty(m.Region), Role: m.Role, Primary: m.Name == c.Primary, Lease: "-",
		Problems: strings.Join(m.Problems, "; ")}
	if degraded {
		mv.Health, mv.HealthClass = "unknown", "unknown"
		if mv.Primary {
			mv.Role = "primary"
		} else {
			mv.Role = "unknown"
		}
		mv.LagBytes, mv.LagSeconds, mv.ReportAge, mv.Problems = "?", "?", "?", ""
		return mv
	}
	mv.Health, mv.HealthClass = "healthy", "ok"
	if !m.Healthy {
		mv.Health, mv.HealthClass = "UNHEALTHY", "bad"
	}
	switch {
	case m.LagBytes < 0:
		mv.LagBytes, mv.LagSeconds = "?", "?"
	case m.Role == "primary" && m.LagBytes == 0 && m.LagSeconds == 0:
		mv.LagBytes, mv.LagSeconds = "-", "-"
	default:
		mv.LagBytes, mv.LagSeconds = ctl.FormatBytes(m.LagBytes), ctl.FormatSeconds(m.LagSeconds)
	}
	if m.LastReportAgeSeconds < 0 {
		mv.ReportAge = "never"
	} else {
		mv.ReportAge = ctl.FormatSeconds(m.LastReportAgeSeconds)
	}
	if mv.Primary {
		mv.Lease = "none held"
		if t, err := time.Parse(time.RFC3339, c.LeaseExpiresAt); err == nil {
			if left := t.Sub(now); left > 0 {
				mv.Lease = "expires in " + ctl.FormatSeconds(left.Seconds())
			} else {
				mv.Lease = "EXPIRED " + ctl.FormatSeconds(-left.Seconds()) + " ago"
			}
		}
	}
	return mv
}

// compliancePageView lays the cluster's compliance out as the report's
// "targets and measured values" table.
func compliancePageView(cp ctl.ComplianceJSON) *complianceView {
	out := &complianceView{Targets: cp.Targets, Breaches: cp.Breaches}
	breached := func(target, subject string) bool {
		for _, b := range cp.Breaches {
			if b.Target == target && (subject == "" || b.Subject == subject) {
				return true
			}
		}
		return false
	}
	row := func(name, limit, measured string, br bool) {
		st := "ok"
		if br {
			st = "BREACHED"
		}
		if measured == "" {
			measured, st = "not measured", "-"
		}
		out.Rows = append(out.Rows, targetRow{Name: name, Limit: limit, Measured: measured, State: st, Breached: br})
	}
	for _, a := range cp.ArchiveRPO {
		name := fmt.Sprintf("Archive RPO, repository %s (%s)", a.Repository, a.Mode)
		if a.Mode == "async" {
			name = fmt.Sprintf("Copy lag and archive RPO, repository %s (async)", a.Repository)
		}
		row(name, cp.Targets.RPO, fmt.Sprintf("%s, %s not archived, %d segments waiting", ctl.FormatSeconds(a.Seconds), ctl.FormatBytes(int64(a.Bytes)), a.ReadySegments),
			breached(compliance.TargetArchiveRPO, a.Repository))
	}
	if len(cp.ArchiveRPO) == 0 {
		row("Archive RPO", cp.Targets.RPO, "", false)
	}
	if f := cp.FailoverRPO; f.Known {
		row("Failover RPO (best candidate "+f.Candidate+")", cp.Targets.RPO,
			fmt.Sprintf("%s, %s behind", ctl.FormatSeconds(f.Seconds), ctl.FormatBytes(int64(f.LagBytes))), breached(compliance.TargetFailoverRPO, ""))
	} else {
		row("Failover RPO ("+dashIfEmpty(f.Note)+")", cp.Targets.RPO, "", false)
	}
	if wa := cp.WriteAvailability; wa != nil {
		measured := ""
		if wa.GoodSeconds+wa.BadSeconds > 0 {
			measured = ctl.WriteAvailabilityLine(wa)
		}
		row("Write availability (28 days, from the heartbeat)", ctl.TargetPercent(wa.Target), measured,
			measured != "" && wa.Ratio < wa.Target)
		lag := ""
		if len(wa.Lag) > 0 {
			lag = ctl.HeartbeatLagLine(wa)
		}
		row("Replication lag from the heartbeat", "-", lag, false)
	}
	for _, r := range cp.RTO {
		limit, target := cp.Targets.Failover, compliance.TargetFailover
		name := "Last " + r.Source
		if r.Source == compliance.SourceDrill {
			limit, target, name = cp.Targets.RTO, compliance.TargetRTO, "RTO: last drill's restore"
		}
		m := ""
		if r.Recorded {
			m = fmt.Sprintf("%s (%s, %s)", ctl.FormatSeconds(r.Seconds), dashIfEmpty(r.Node), dashIfEmpty(r.At))
		} else if r.Note != "" {
			name += ": " + r.Note
		}
		row(name, limit, m, r.Recorded && breached(target, r.Source))
	}
	return out
}

// backupsPageView is the report's backups per tier over every run the
// replicated state holds, with the last good one's age.
func backupsPageView(c *pgdrv1.Cluster, now time.Time) []backupView {
	rep := ctl.ReportView(&pgdrv1.ReportResponse{Clusters: []*pgdrv1.ClusterReport{{Name: c.GetName(), Backups: tierBackups(c, time.Time{})}}})
	p, _ := policy.Effective(c)
	schedules := map[string]string{}
	for _, t := range p.Tiers {
		schedules[t.Name] = t.Schedule
	}
	var out []backupView
	for _, t := range rep.Clusters[0].Backups {
		b := backupView{Tier: t.Tier, Schedule: dashIfEmpty(schedules[t.Tier]), LastOK: "none recorded", Age: "-", Backup: dashIfEmpty(t.LastOKBackup),
			OK: t.OK, Failed: t.Failed, Running: t.Running, Stale: t.LastOK == ""}
		if at, err := time.Parse(time.RFC3339, t.LastOK); err == nil {
			b.LastOK, b.Age = t.LastOK, ctl.FormatSeconds(now.Sub(at).Seconds())
		}
		out = append(out, b)
	}
	return out
}

// otherCoordinators names the other coordinators (no links: their page is
// on their own ui.listen, which this one does not know).
func (s *Server) otherCoordinators() string {
	if s.raft == nil {
		return ""
	}
	var names []string
	for _, c := range s.coordinatorStatus() {
		if c.Name != s.cfg.Name {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return ": " + strings.Join(names, ", ")
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// grpcMessage is an error's text without the gRPC "rpc error: code = ..."
// prefix.
func grpcMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "desc = "); i >= 0 {
		return msg[i+len("desc = "):]
	}
	return msg
}
