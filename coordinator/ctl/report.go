package ctl

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ComplianceJSON is a cluster's recovery targets against measured values,
// in status and in the report.
type ComplianceJSON struct {
	Targets     TargetsJSON     `json:"targets"`
	ArchiveRPO  []RepoRPOJSON   `json:"archive_rpo"`
	FailoverRPO FailoverRPOJSON `json:"failover_rpo"`
	// RTO: the latest measurement per source (failover, switchover, drill).
	RTO      []RTOJSON    `json:"rto"`
	Breaches []BreachJSON `json:"breaches"`
	// WriteAvailability: the write-availability SLO (absent from a
	// coordinator that does not measure it).
	WriteAvailability *WriteAvailabilityJSON `json:"write_availability,omitempty"`
}

// WriteAvailabilityJSON is a cluster's write-availability SLO over the
// last 28 days (docs/slo.md).
type WriteAvailabilityJSON struct {
	WindowSeconds     int64   `json:"window_seconds"`
	GoodSeconds       uint64  `json:"good_seconds"`
	BadSeconds        uint64  `json:"bad_seconds"`
	UnobservedSeconds uint64  `json:"unobserved_seconds"`
	Ratio             float64 `json:"ratio"`
	Target            float64 `json:"target"`
	BudgetRemaining   float64 `json:"error_budget_remaining"`
	LastHeartbeat     string  `json:"last_heartbeat"`
	// GoodTotal, BadTotal: every judged second since the cluster was first
	// judged; RecordedThrough: the end of the last second recorded.
	GoodTotal       uint64 `json:"good_total"`
	BadTotal        uint64 `json:"bad_total"`
	RecordedThrough string `json:"recorded_through"`
	// Lag: per member, replication lag in seconds measured from the heartbeat.
	Lag []HeartbeatLagJSON `json:"heartbeat_lag"`
}

// HeartbeatLagJSON is one member's replication lag from the heartbeat.
type HeartbeatLagJSON struct {
	Node    string  `json:"node"`
	Seconds float64 `json:"seconds"`
}

func writeAvailabilityView(w *pgdrv1.WriteAvailability) *WriteAvailabilityJSON {
	if w == nil {
		return nil
	}
	v := &WriteAvailabilityJSON{WindowSeconds: w.GetWindowSeconds(), GoodSeconds: w.GetGoodSeconds(), BadSeconds: w.GetBadSeconds(),
		UnobservedSeconds: w.GetUnobservedSeconds(), Ratio: w.GetRatio(), Target: w.GetTarget(), BudgetRemaining: w.GetBudgetRemaining(),
		LastHeartbeat: rfc3339(w.GetLastHeartbeat()), Lag: []HeartbeatLagJSON{},
		GoodTotal: w.GetGoodTotal(), BadTotal: w.GetBadTotal(), RecordedThrough: rfc3339(w.GetRecordedThrough())}
	for _, l := range w.GetLag() {
		v.Lag = append(v.Lag, HeartbeatLagJSON{Node: l.GetNode(), Seconds: l.GetSeconds()})
	}
	return v
}

// percent formats a ratio as a percentage with enough digits for 99.99%.
func percent(r float64) string {
	return strconv.FormatFloat(r*100, 'f', 4, 64) + "%"
}

// TargetPercent is a target ratio as the policy file writes it (99.99%).
func TargetPercent(r float64) string {
	return compliance.FormatPPM(uint32(math.Round(r * 1e6)))
}

// WriteAvailabilityLine is the SLO in one line (status, the report).
func WriteAvailabilityLine(w *WriteAvailabilityJSON) string {
	if w.GoodSeconds+w.BadSeconds == 0 {
		return fmt.Sprintf("not measured yet (no heartbeat judged; target %s)", TargetPercent(w.Target))
	}
	s := fmt.Sprintf("%s over 28d (target %s), error budget left %s; %d s bad", percent(w.Ratio), TargetPercent(w.Target),
		strconv.FormatFloat(w.BudgetRemaining*100, 'f', 1, 64)+"%", w.BadSeconds)
	if w.UnobservedSeconds > 0 {
		s += fmt.Sprintf(" (%d s of them unobserved: no coordinator leader judged)", w.UnobservedSeconds)
	}
	return s
}

// HeartbeatLagLine is the members' replication lag from the heartbeat.
func HeartbeatLagLine(w *WriteAvailabilityJSON) string {
	var parts []string
	for _, l := range w.Lag {
		parts = append(parts, fmt.Sprintf("%s %s", l.Node, seconds(l.Seconds)))
	}
	if len(parts) == 0 {
		return "no heartbeat reported"
	}
	return strings.Join(parts, ", ")
}

// RepoRPOJSON is one repository's archive RPO.
type RepoRPOJSON struct {
	Repository    string  `json:"repository"`
	Mode          string  `json:"mode"`
	Bytes         uint64  `json:"bytes"`
	Seconds       float64 `json:"seconds"`
	Node          string  `json:"node"`
	ReadySegments uint32  `json:"ready_segments"`
}

// FailoverRPOJSON is the best failover candidate's lag.
type FailoverRPOJSON struct {
	Known     bool    `json:"known"`
	Candidate string  `json:"candidate"`
	LagBytes  uint64  `json:"lag_bytes"`
	Seconds   float64 `json:"lag_seconds"`
	Note      string  `json:"note"`
}

// RTOJSON is one measured recovery time.
type RTOJSON struct {
	Source   string  `json:"source"`
	Recorded bool    `json:"recorded"`
	Kind     string  `json:"kind"`
	Node     string  `json:"node"`
	At       string  `json:"at"`
	Seconds  float64 `json:"seconds"`
	Note     string  `json:"note"`
}

// BreachJSON is one breached target.
type BreachJSON struct {
	Target          string  `json:"target"`
	Subject         string  `json:"subject"`
	MeasuredSeconds float64 `json:"measured_seconds"`
	TargetSeconds   float64 `json:"target_seconds"`
	Since           string  `json:"since"`
	Message         string  `json:"message"`
}

func complianceView(c *pgdrv1.Compliance) ComplianceJSON {
	v := ComplianceJSON{Targets: targetsView(compliance.TargetsFromProto(c.GetTargets())), ArchiveRPO: []RepoRPOJSON{}, RTO: []RTOJSON{}, Breaches: []BreachJSON{}}
	for _, a := range c.GetArchiveRpo() {
		v.ArchiveRPO = append(v.ArchiveRPO, RepoRPOJSON{Repository: a.GetRepository(), Mode: a.GetMode(), Bytes: a.GetBytes(),
			Seconds: a.GetSeconds(), Node: a.GetNode(), ReadySegments: a.GetReadySegments()})
	}
	f := c.GetFailoverRpo()
	v.FailoverRPO = FailoverRPOJSON{Known: f.GetKnown(), Candidate: f.GetCandidate(), LagBytes: f.GetLagBytes(), Seconds: f.GetLagSeconds(), Note: f.GetNote()}
	for _, r := range c.GetRto() {
		v.RTO = append(v.RTO, RTOJSON{Source: r.GetSource(), Recorded: r.GetRecorded(), Kind: r.GetKind(), Node: r.GetNode(),
			At: rfc3339(r.GetAt()), Seconds: r.GetSeconds(), Note: r.GetNote()})
	}
	for _, b := range c.GetBreaches() {
		v.Breaches = append(v.Breaches, BreachJSON{Target: b.GetTarget(), Subject: b.GetSubject(), MeasuredSeconds: b.GetMeasuredSeconds(),
			TargetSeconds: b.GetTargetSeconds(), Since: rfc3339(b.GetSince()), Message: b.GetMessage()})
	}
	v.WriteAvailability = writeAvailabilityView(c.GetWriteAvailability())
	return v
}

// writeComplianceLines is status's per-cluster summary of the targets.
func writeComplianceLines(w io.Writer, c ComplianceJSON) {
	fmt.Fprintf(w, "  targets: rto %s, rpo %s, failover %s, write availability %s\n", c.Targets.RTO, c.Targets.RPO, c.Targets.Failover, c.Targets.WriteAvailability)
	var parts []string
	for _, a := range c.ArchiveRPO {
		parts = append(parts, fmt.Sprintf("archive RPO %s (%s) %s, %s", a.Repository, a.Mode, seconds(a.Seconds), humanBytes(int64(a.Bytes))))
	}
	if f := c.FailoverRPO; f.Known {
		parts = append(parts, fmt.Sprintf("failover RPO %s, %s (%s)", seconds(f.Seconds), humanBytes(int64(f.LagBytes)), f.Candidate))
	} else {
		parts = append(parts, "failover RPO unknown ("+dash(f.Note)+")")
	}
	for _, r := range c.RTO {
		if r.Recorded {
			parts = append(parts, fmt.Sprintf("last %s %s", r.Source, seconds(r.Seconds)))
		} else {
			parts = append(parts, dash(r.Note))
		}
	}
	fmt.Fprintf(w, "  measured: %s\n", strings.Join(parts, "; "))
	if wa := c.WriteAvailability; wa != nil {
		fmt.Fprintf(w, "  write availability: %s\n", WriteAvailabilityLine(wa))
		fmt.Fprintf(w, "  heartbeat lag: %s\n", HeartbeatLagLine(wa))
	}
	if len(c.Breaches) == 0 {
		fmt.Fprintln(w, "  breaches: none")
	}
	for _, b := range c.Breaches {
		fmt.Fprintf(w, "  BREACH %s/%s: %s\n", b.Target, b.Subject, b.Message)
	}
}

// ReportJSON is `pgdrctl report --json`.
type ReportJSON struct {
	Time       string              `json:"time"`
	Since      string              `json:"since"`
	AnsweredBy string              `json:"answered_by"`
	Clusters   []ClusterReportJSON `json:"clusters"`
}

// ClusterReportJSON is one cluster's section of the report.
type ClusterReportJSON struct {
	Name        string            `json:"name"`
	Compliance  ComplianceJSON    `json:"compliance"`
	Backups     []TierBackupsJSON `json:"backups"`
	Drills      DrillSummaryJSON  `json:"drills"`
	Recoveries  []RecoveryJSON    `json:"recoveries"`
	HistoryFrom string            `json:"history_from"`
	GameDays    []GameDayJSON     `json:"game_days"`
}

// TierBackupsJSON is one tier's backup runs in the period.
type TierBackupsJSON struct {
	Tier         string `json:"tier"`
	OK           uint32 `json:"ok"`
	Failed       uint32 `json:"failed"`
	Running      uint32 `json:"running"`
	LastOK       string `json:"last_ok"`
	LastOKBackup string `json:"last_ok_backup"`
	Verification string `json:"verification"`
}

// DrillSummaryJSON is the drills of the period.
type DrillSummaryJSON struct {
	Recorded bool     `json:"recorded"`
	Note     string   `json:"note"`
	OK       uint32   `json:"ok"`
	Failed   uint32   `json:"failed"`
	Last     *RTOJSON `json:"last,omitempty"`
}

// RecoveryJSON is one failover or switchover with its measured duration.
type RecoveryJSON struct {
	Kind            string  `json:"kind"`
	Node            string  `json:"node"`
	OldPrimary      string  `json:"old_primary"`
	Epoch           uint64  `json:"epoch"`
	Started         string  `json:"started"`
	Writable        string  `json:"writable"`
	DurationSeconds float64 `json:"duration_seconds"`
	Measured        bool    `json:"measured"`
	OK              bool    `json:"ok"`
	Result          string  `json:"result"`
}

func reportView(r *pgdrv1.ReportResponse) ReportJSON {
	v := ReportJSON{Time: rfc3339(r.GetTime()), Since: rfc3339(r.GetSince()), AnsweredBy: r.GetAnsweredBy(), Clusters: []ClusterReportJSON{}}
	for _, c := range r.GetClusters() {
		cj := ClusterReportJSON{Name: c.GetName(), Compliance: complianceView(c.GetCompliance()), Backups: []TierBackupsJSON{},
			Recoveries: []RecoveryJSON{}, HistoryFrom: rfc3339(c.GetHistoryFrom()), GameDays: []GameDayJSON{}}
		for _, g := range c.GetGameDays() {
			cj.GameDays = append(cj.GameDays, gameDayView(g))
		}
		for _, b := range c.GetBackups() {
			cj.Backups = append(cj.Backups, TierBackupsJSON{Tier: b.GetTier(), OK: b.GetOk(), Failed: b.GetFailed(), Running: b.GetRunning(),
				LastOK: rfc3339(b.GetLastOk()), LastOKBackup: b.GetLastOkBackup(), Verification: b.GetVerification()})
		}
		d := c.GetDrills()
		cj.Drills = DrillSummaryJSON{Recorded: d.GetRecorded(), Note: d.GetNote(), OK: d.GetOk(), Failed: d.GetFailed()}
		if l := d.GetLast(); l != nil {
			cj.Drills.Last = &RTOJSON{Source: l.GetSource(), Recorded: l.GetRecorded(), At: rfc3339(l.GetAt()), Seconds: l.GetSeconds(), Note: l.GetNote()}
		}
		for _, e := range c.GetRecoveries() {
			cj.Recoveries = append(cj.Recoveries, RecoveryJSON{Kind: e.GetKind(), Node: e.GetNode(), OldPrimary: e.GetOldPrimary(), Epoch: e.GetEpoch(),
				Started: rfc3339(e.GetStarted()), Writable: rfc3339(e.GetWritable()), DurationSeconds: e.GetDurationSeconds(),
				Measured: e.GetMeasured(), OK: e.GetOk(), Result: e.GetResult()})
		}
		v.Clusters = append(v.Clusters, cj)
	}
	return v
}

// parseSince reads --since: a duration back from now (30d, 12h) or an
// RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		if t.After(now) {
			return time.Time{}, fmt.Errorf("%s is in the future", s)
		}
		return t, nil
	}
	d, err := duration.Parse(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (30d, 12h) nor an RFC 3339 time", s)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("%s is not a positive duration", s)
	}
	return now.Add(-d), nil
}

func cmdReport(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "report", "report [--cluster C] [--since D] [--json | --md]",
		`The compliance report, assembled by the leader: per cluster, the recovery
targets against the measured archive RPO (per repository), failover RPO
(the best candidate's lag) and failover/switchover times, the backups per
tier in the period, the drills, every failover and switchover of the period
with its measured duration, and the open breaches. --since is a duration
back from now (default 30d) or an RFC 3339 time. The default output is
Markdown (--md says so explicitly), readable as text. Needs role read.`, cf)
	cluster := f.String("cluster", "", "one cluster (default: all)")
	sinceFlag := f.String("since", "30d", "the period's start: a duration back from now (30d, 12h) or an RFC 3339 time")
	md := f.Bool("md", false, "print Markdown (the default)")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	if *md && f.json() {
		return usagef("--json and --md exclude each other")
	}
	since, err := parseSince(strings.TrimSpace(*sinceFlag), time.Now())
	if err != nil {
		return usagef("--since: %v", err)
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.ReportResponse
	if _, err := cl.call(ctx, "Report", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Report(ctx, &pgdrv1.ReportRequest{Cluster: *cluster, Since: timestamppb.New(since)})
		return err
	}); err != nil {
		return err
	}
	v := reportView(resp)
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeReportMarkdown(e.stdout, v)
}

// writeReportMarkdown prints the report as Markdown an auditor reads as is.
func writeReportMarkdown(w io.Writer, v ReportJSON) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# pgdr compliance report\n\nPeriod: %s to %s (answered by %s).\n", v.Since, v.Time, dash(v.AnsweredBy))
	if len(v.Clusters) == 0 {
		b.WriteString("\nNo clusters registered.\n")
	}
	for _, c := range v.Clusters {
		cp := c.Compliance
		fmt.Fprintf(&b, "\n## Cluster %s\n\n", c.Name)
		if len(cp.Breaches) == 0 {
			b.WriteString("**Open breaches: none.**\n")
		} else {
			fmt.Fprintf(&b, "**Open breaches: %d.**\n\n", len(cp.Breaches))
			for _, br := range cp.Breaches {
				since := ""
				if br.Since != "" {
					since = " (since " + br.Since + ")"
				}
				fmt.Fprintf(&b, "- BREACH %s/%s: %s%s\n", br.Target, br.Subject, br.Message, since)
			}
		}
		b.WriteString("\n### Targets and measured values\n\n| Target | Limit | Measured | Status |\n|---|---|---|---|\n")
		row := func(name, limit, measured string, breached bool) {
			st := "ok"
			if breached {
				st = "**BREACHED**"
			}
			if measured == "" {
				measured, st = "not measured", "-"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, limit, measured, st)
		}
		isBreached := func(target, subject string) bool {
			for _, br := range cp.Breaches {
				if br.Target == target && (subject == "" || br.Subject == subject) {
					return true
				}
			}
			return false
		}
		for _, a := range cp.ArchiveRPO {
			row(fmt.Sprintf("Archive RPO, repository %s (%s)", a.Repository, a.Mode), cp.Targets.RPO,
				fmt.Sprintf("%s, %s not archived, %d segments waiting", seconds(a.Seconds), humanBytes(int64(a.Bytes)), a.ReadySegments),
				isBreached(compliance.TargetArchiveRPO, a.Repository))
		}
		if len(cp.ArchiveRPO) == 0 {
			row("Archive RPO", cp.Targets.RPO, "", false)
		}
		if f := cp.FailoverRPO; f.Known {
			row("Failover RPO (best candidate "+f.Candidate+")", cp.Targets.RPO, fmt.Sprintf("%s, %s behind", seconds(f.Seconds), humanBytes(int64(f.LagBytes))),
				isBreached(compliance.TargetFailoverRPO, ""))
		} else {
			row("Failover RPO ("+dash(f.Note)+")", cp.Targets.RPO, "", false)
		}
		for _, r := range cp.RTO {
			limit, target := cp.Targets.Failover, compliance.TargetFailover
			name := "Last " + r.Source + " (detection or request to writable primary)"
			if r.Source == compliance.SourceDrill {
				limit, target, name = cp.Targets.RTO, compliance.TargetRTO, "RTO: last drill's restore"
			}
			m := ""
			if r.Recorded {
				m = fmt.Sprintf("%s (%s, %s)", seconds(r.Seconds), dash(r.Node), dash(r.At))
			} else if r.Note != "" {
				name += ": " + r.Note
			}
			row(name, limit, m, r.Recorded && isBreached(target, r.Source))
		}
		if wa := cp.WriteAvailability; wa != nil {
			b.WriteString("\n### Write availability (28 days)\n\n")
			fmt.Fprintf(&b, "%s.\n\nReplication lag from the heartbeat: %s.\n", capitalize(WriteAvailabilityLine(wa)), HeartbeatLagLine(wa))
		}
		b.WriteString("\n### Backups per tier\n\n| Tier | OK | Failed | Running | Last OK | Verification |\n|---|---|---|---|---|---|\n")
		for _, t := range c.Backups {
			last := dash(t.LastOK)
			if t.LastOKBackup != "" {
				last += " (" + t.LastOKBackup + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s |\n", t.Tier, t.OK, t.Failed, t.Running, last, dash(t.Verification))
		}
		b.WriteString("\n### Restore drills\n\n")
		if !c.Drills.Recorded {
			fmt.Fprintf(&b, "None recorded (%s).\n", dash(c.Drills.Note))
		} else {
			fmt.Fprintf(&b, "%d ok, %d failed.", c.Drills.OK, c.Drills.Failed)
			if l := c.Drills.Last; l != nil {
				fmt.Fprintf(&b, " Last: %s restore at %s.", seconds(l.Seconds), dash(l.At))
			}
			b.WriteString("\n")
		}
		writeGameDaysMarkdown(&b, c.GameDays)
		b.WriteString("\n### Failovers and switchovers\n\n")
		if len(c.Recoveries) == 0 {
			b.WriteString("None in the period.\n")
		} else {
			b.WriteString("| Kind | New primary | Old primary | Started | Writable | Duration | Result |\n|---|---|---|---|---|---|---|\n")
			for _, r := range c.Recoveries {
				d := "not measured"
				if r.Measured {
					d = seconds(r.DurationSeconds)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Kind, r.Node, dash(r.OldPrimary), r.Started, dash(r.Writable), d,
					strings.ReplaceAll(r.Result, "|", "/"))
			}
		}
		if c.HistoryFrom != "" && c.HistoryFrom > v.Since {
			fmt.Fprintf(&b, "\nNote: the history held reaches back to %s only; earlier events of the period are not shown.\n", c.HistoryFrom)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// capitalize upper-cases the first letter of s.
func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
