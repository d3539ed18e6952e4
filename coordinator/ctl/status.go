package ctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/layout"
	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// StatusJSON is `pgdrctl status --json`. Its field names and types are a
// contract with scripts and tests: lists are never null and numbers are
// JSON numbers (protojson would render uint64 as strings).
type StatusJSON struct {
	Coordinators []CoordinatorJSON `json:"coordinators"`
	Clusters     []ClusterJSON     `json:"clusters"`
	// AnsweredBy is the coordinator whose memory the health came from.
	AnsweredBy string `json:"answered_by"`
	// Address is the address pgdrctl reached.
	Address string `json:"address"`
	Time    string `json:"time,omitempty"`
	// Warnings: what losing any one region would break (coordinator/layout);
	// empty when the layout survives it.
	Warnings []layout.Warning `json:"warnings"`
}

// CoordinatorJSON is one coordinator as status and coordinator list show it.
type CoordinatorJSON struct {
	Name        string `json:"name"`
	Address     string `json:"address"`
	Leader      bool   `json:"leader"`
	Region      string `json:"region"`
	RaftAddress string `json:"raft_address"`
	Gossip      string `json:"gossip"`
	Voter       bool   `json:"voter"`
}

// ClusterJSON is one PostgreSQL cluster in status.
type ClusterJSON struct {
	Name         string       `json:"name"`
	Primary      string       `json:"primary"`
	Epoch        uint64       `json:"epoch"`
	Paused       bool         `json:"paused"`
	PausedReason string       `json:"paused_reason"`
	Members      []MemberJSON `json:"members"`
	Policy       *PolicyJSON  `json:"policy,omitempty"`
	// LeaseExpiresAt: the primary's lease as the leader knows it ("" = none).
	LeaseExpiresAt string `json:"lease_expires_at"`
	// Failover: the leader's current failover judgement.
	Failover string `json:"failover"`
	// Compliance: recovery targets against measured values (absent from
	// coordinators that predate it).
	Compliance *ComplianceJSON `json:"compliance,omitempty"`
}

// MemberJSON is one member's observed state in status.
type MemberJSON struct {
	Name    string `json:"name"`
	Region  string `json:"region"`
	Role    string `json:"role"`
	Healthy bool   `json:"healthy"`
	DSN     string `json:"dsn"`
	// Timeline, LSN and LSNBytes: LSN is PostgreSQL's "X/Y" text of LSNBytes.
	Timeline uint32 `json:"timeline"`
	LSN      string `json:"lsn"`
	LSNBytes uint64 `json:"lsn_bytes"`
	LagBytes int64  `json:"lag_bytes"`
	// LagSeconds and LastReportAgeSeconds: LastReportAgeSeconds is -1 when
	// no report was ever received.
	LagSeconds           float64  `json:"lag_seconds"`
	LastReportAgeSeconds float64  `json:"last_report_age_seconds"`
	Problems             []string `json:"problems"`
	Tags                 []string `json:"tags"`
	Priority             int32    `json:"priority"`
	APIURL               string   `json:"api_url"`
	Streaming            bool     `json:"streaming"`
	Gossip               string   `json:"gossip"`
	ReceiveLSN           string   `json:"receive_lsn"`
	ReplayLSN            string   `json:"replay_lsn"`
	ArchiveFailedCount   uint64   `json:"archive_failed_count"`
}

// PolicyJSON is a cluster's operator policy.
type PolicyJSON struct {
	Paused               bool     `json:"paused"`
	PausedReason         string   `json:"paused_reason"`
	PausedBy             string   `json:"paused_by"`
	PausedAt             string   `json:"paused_at"`
	MaximumLagOnFailover uint64   `json:"maximum_lag_on_failover"`
	Synchronous          string   `json:"synchronous"`
	PreferredRegions     []string `json:"preferred_regions"`
}

// statusView turns a StatusResponse into StatusJSON, sorted the way the
// human output reads: clusters and coordinators by name, members by region
// then name.
func statusView(r *pgdrv1.StatusResponse, addr string) StatusJSON {
	v := StatusJSON{
		Coordinators: coordinatorsView(r.GetCoordinators()),
		Clusters:     []ClusterJSON{},
		AnsweredBy:   r.GetAnsweredBy(),
		Address:      addr,
		Time:         rfc3339(r.GetTime()),
	}
	for _, c := range r.GetClusters() {
		cj := ClusterJSON{
			Name:         c.GetName(),
			Primary:      c.GetPrimary(),
			Epoch:        c.GetEpoch(),
			Paused:       c.GetPaused(),
			PausedReason: c.GetPausedReason(),
			Members:      []MemberJSON{},
			Failover:     c.GetFailover(),
		}
		if c.GetLeaseExpiresAt() != nil {
			cj.LeaseExpiresAt = rfc3339(c.GetLeaseExpiresAt())
		}
		if c.GetPolicy() != nil {
			p := policyView(c.GetPolicy())
			cj.Policy = &p
		}
		if c.GetCompliance() != nil {
			cv := complianceView(c.GetCompliance())
			cj.Compliance = &cv
		}
		for _, m := range c.GetMembers() {
			cj.Members = append(cj.Members, memberView(m))
		}
		slices.SortFunc(cj.Members, func(a, b MemberJSON) int {
			return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Name, b.Name))
		})
		v.Clusters = append(v.Clusters, cj)
	}
	slices.SortFunc(v.Clusters, func(a, b ClusterJSON) int { return cmp.Compare(a.Name, b.Name) })
	v.Warnings = layoutWarnings(v)
	return v
}

// layoutWarnings is layout.Check on what status shows (never nil).
func layoutWarnings(v StatusJSON) []layout.Warning {
	var coords []layout.Coordinator
	for _, c := range v.Coordinators {
		coords = append(coords, layout.Coordinator{Name: c.Name, Region: c.Region, Voter: c.Voter})
	}
	var clusters []layout.Cluster
	for _, c := range v.Clusters {
		lc := layout.Cluster{Name: c.Name}
		for _, m := range c.Members {
			lc.Members = append(lc.Members, layout.Member{Name: m.Name, Region: m.Region, Primary: m.Name == c.Primary})
		}
		clusters = append(clusters, lc)
	}
	ws := layout.Check(coords, clusters)
	if ws == nil {
		ws = []layout.Warning{}
	}
	return ws
}

func coordinatorsView(cs []*pgdrv1.CoordinatorStatus) []CoordinatorJSON {
	out := []CoordinatorJSON{}
	for _, c := range cs {
		out = append(out, CoordinatorJSON{
			Name:        c.GetName(),
			Address:     c.GetAddress(),
			Leader:      c.GetLeader(),
			Region:      c.GetRegion(),
			RaftAddress: c.GetRaftAddress(),
			Gossip:      c.GetGossip(),
			Voter:       c.GetVoter(),
		})
	}
	slices.SortFunc(out, func(a, b CoordinatorJSON) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func memberView(m *pgdrv1.MemberStatus) MemberJSON {
	role := m.GetRole()
	if role == "" {
		role = "unknown"
	}
	return MemberJSON{
		Name:                 m.GetName(),
		Region:               m.GetRegion(),
		Role:                 role,
		Healthy:              m.GetHealthy(),
		DSN:                  m.GetDsn(),
		Timeline:             m.GetTimeline(),
		LSN:                  wal.LSN(m.GetLsn()).String(),
		LSNBytes:             m.GetLsn(),
		LagBytes:             m.GetLagBytes(),
		LagSeconds:           finite(m.GetLagSeconds(), 0),
		LastReportAgeSeconds: finite(m.GetLastReportAgeSeconds(), -1),
		Problems:             nonNil(m.GetProblems()),
		Tags:                 nonNil(m.GetTags()),
		Priority:             m.GetPriority(),
		APIURL:               m.GetApiUrl(),
		Streaming:            m.GetStreaming(),
		Gossip:               m.GetGossip(),
		ReceiveLSN:           wal.LSN(m.GetReceiveLsn()).String(),
		ReplayLSN:            wal.LSN(m.GetReplayLsn()).String(),
		ArchiveFailedCount:   m.GetArchiveFailedCount(),
	}
}

func policyView(p *pgdrv1.Policy) PolicyJSON {
	return PolicyJSON{
		Paused:               p.GetPaused(),
		PausedReason:         p.GetPausedReason(),
		PausedBy:             p.GetPausedBy(),
		PausedAt:             rfc3339(p.GetPausedAt()),
		MaximumLagOnFailover: p.GetMaximumLagOnFailover(),
		Synchronous:          p.GetSynchronous(),
		PreferredRegions:     nonNil(p.GetPreferredRegions()),
	}
}

// finite replaces NaN and infinities, which encoding/json refuses, by def.
func finite(f, def float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return def
	}
	return f
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func cmdStatus(ctx context.Context, e env, cf *connFlags, args []string) error {
	f := newCmdFlags(e, "status", "status [--cluster C] [--json]", `Shows the coordinators (leader, region, gossip state) and, per cluster, its
primary, epoch and maintenance mode, and every member grouped by region:
role, health, timeline, LSN, replication lag, the age of its last report and,
when unhealthy, why. The health comes from the Raft leader's memory.

It warns when losing any one region would take the service down: the
coordinators' quorum (no region may hold as many voters as the others'
quorum needs: three voters go one per region), or a cluster with no member
outside its primary's region. See docs/regions.md.`, cf)
	cluster := f.String("cluster", "", "show only this cluster")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cl, err := cf.client()
	if err != nil {
		return err
	}
	var resp *pgdrv1.StatusResponse
	addr, err := cl.call(ctx, "Status", func(ctx context.Context, c pgdrv1.AdminServiceClient) error {
		var err error
		resp, err = c.Status(ctx, &pgdrv1.StatusRequest{Cluster: *cluster})
		return err
	})
	if err != nil {
		return err
	}
	v := statusView(resp, addr)
	if f.json() {
		return printJSON(e.stdout, v)
	}
	return writeStatus(e.stdout, v)
}

func writeStatus(w io.Writer, v StatusJSON) error {
	via := v.AnsweredBy
	if via == "" {
		via = v.Address
	} else {
		via += " via " + v.Address
	}
	fmt.Fprintf(w, "Coordinators (answered by %s):\n", via)
	if err := writeCoordinators(w, v.Coordinators); err != nil {
		return err
	}
	if len(v.Warnings) > 0 {
		fmt.Fprintln(w, "\nLayout warnings (losing one region):")
		for _, wr := range v.Warnings {
			fmt.Fprintf(w, "  WARNING: %s\n", wr.Message)
		}
	}
	if len(v.Clusters) == 0 {
		fmt.Fprintln(w, "\nNo clusters registered.")
	}
	for _, c := range v.Clusters {
		fmt.Fprintf(w, "\nCluster %s: primary %s, epoch %d", c.Name, dash(c.Primary), c.Epoch)
		if c.Paused {
			fmt.Fprint(w, ", PAUSED (maintenance mode")
			if c.PausedReason != "" {
				fmt.Fprintf(w, ": %s", c.PausedReason)
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
		if c.Failover != "" {
			fmt.Fprintf(w, "  failover: %s\n", c.Failover)
		}
		if len(c.Members) == 0 {
			fmt.Fprintln(w, "  (no members registered)")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tREGION\tROLE\tHEALTHY\tTIMELINE\tLSN\tLAG\tREPORT-AGE\tPROBLEMS")
		for _, m := range c.Members {
			healthy := "yes"
			if !m.Healthy {
				healthy = "NO"
			}
			tl, lsn := "-", "-"
			if m.Timeline != 0 {
				tl = fmt.Sprint(m.Timeline)
			}
			if m.LSNBytes != 0 {
				lsn = m.LSN
			}
			problems := "-"
			if len(m.Problems) > 0 {
				problems = strings.Join(m.Problems, "; ")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, dash(m.Region), m.Role, healthy, tl, lsn,
				lag(m), age(m.LastReportAgeSeconds), problems)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if c.Compliance != nil {
			writeComplianceLines(w, *c.Compliance)
		}
	}
	return nil
}

func writeCoordinators(w io.Writer, cs []CoordinatorJSON) error {
	if len(cs) == 0 {
		_, err := fmt.Fprintln(w, "  (none known)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tADDRESS\tLEADER\tREGION\tGOSSIP\tRAFT-ADDRESS")
	for _, c := range cs {
		leader := ""
		if c.Leader {
			leader = "*"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", c.Name, dash(c.Address), leader, dash(c.Region), dash(c.Gossip), dash(c.RaftAddress))
	}
	return tw.Flush()
}

// lag reads "-" on a primary with no lag, bytes plus seconds otherwise.
func lag(m MemberJSON) string {
	if m.LagBytes < 0 {
		return "?"
	}
	if m.Role == "primary" && m.LagBytes == 0 && m.LagSeconds == 0 {
		return "-"
	}
	s := humanBytes(m.LagBytes)
	if m.LagSeconds > 0 {
		s += fmt.Sprintf(" (%s)", seconds(m.LagSeconds))
	}
	return s
}

func age(sec float64) string {
	if sec < 0 {
		return "never"
	}
	return seconds(sec)
}

func seconds(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
