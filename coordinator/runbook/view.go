package runbook

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Roles of a Member.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// View is the snapshot of a cluster the caller fills for Next and DryRun.
type View struct {
	Cluster string
	// Leader identifies the current leadership (coordinator name and Raft
	// term, say). A step recorded running under another is judged from
	// this view instead of awaiting an outcome nobody will report.
	Leader string
	// Settling: the leader's health view is still filling after a
	// leadership change (its agents reconnect): a switchover, backup or
	// drill not yet sent waits rather than being judged on an empty view,
	// and no wait or validation is judged (met or failed) on it.
	Settling bool
	// Primary is the recorded primary ("" = none).
	Primary string
	// Paused: automatic failover of the cluster is paused; PausedBy: who
	// paused it (a run's pause names it: RunActor).
	Paused   bool
	PausedBy string
	Members  []Member
	Repos    []Repo
	// ReposUnknown: why the repositories' state is not known (no fresh
	// report from the primary, which carries it); repos_caught_up does
	// not hold then.
	ReposUnknown string
	// Tiers are the policy's backup tiers (empty: not checked).
	Tiers []string
	// In flight now, outside this run or inside it.
	SwitchoverInFlight bool
	BackupInFlight     bool
	DrillInFlight      bool
	// OtherRun names another runbook run of the cluster in flight ("" =
	// none): one runbook per cluster runs at a time.
	OtherRun string
	// Jobs are the cluster's recent backups and drills, for judging a
	// backup or drill step after a leader change.
	Jobs []Job
}

// Member is one PostgreSQL member as the leader sees it.
type Member struct {
	Name, Region string
	// Role: RolePrimary, RoleReplica, or anything else (stopped, fenced).
	Role string
	// Healthy: usable as a switchover target (healthy, connectable,
	// streaming) or, for the primary, a primary a switchover may stop.
	Healthy bool
	// LagBytes: replay lag behind the primary (-1: unknown).
	LagBytes int64
	// NoTarget: why the switchover would not take this replica as its
	// target now (beyond the lag limit, not streaming, an older
	// timeline...; "" when it would). Conditions still count it.
	NoTarget string
	// NoFailover: tagged no-failover, it is never a switchover target
	// (a dry run's assumed wait does not change that).
	NoFailover bool
}

// Repo is one repository of the cluster.
type Repo struct {
	Name     string
	CaughtUp bool
}

// Job is a backup or drill run as recorded by the coordinators.
type Job struct {
	ID string
	// Kind: "backup" or "drill".
	Kind string
	// Tier of a backup.
	Tier    string
	Started time.Time
	// Result: "" while in flight, "ok", or anything else (failed).
	Result string
}

func (v View) member(name string) (Member, bool) {
	i := slices.IndexFunc(v.Members, func(m Member) bool { return m.Name == name })
	if i < 0 {
		return Member{}, false
	}
	return v.Members[i], true
}

// primaryRegion is the region of the recorded primary ("" = unknown).
func (v View) primaryRegion() string {
	m, _ := v.member(v.Primary)
	return m.Region
}

// busy says which operation of the cluster is in flight ("" = none).
func (v View) busy() string {
	switch {
	case v.SwitchoverInFlight:
		return "a switchover"
	case v.BackupInFlight:
		return "a backup"
	case v.DrillInFlight:
		return "a restore drill"
	case v.OtherRun != "":
		return "runbook " + v.OtherRun
	}
	return ""
}

// replicas are the healthy replicas (not the primary) matching a
// region filter.
func (v View) replicas(region, outside string) []Member {
	var out []Member
	for _, m := range v.Members {
		if m.Role != RoleReplica || !m.Healthy || m.Name == v.Primary {
			continue
		}
		if (region != "" && m.Region != region) || (outside != "" && m.Region == outside) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// targets are the replicas a switchover may go to, among
// v.replicas(region, outside).
func (v View) targets(region, outside string) []Member {
	return slices.DeleteFunc(v.replicas(region, outside), func(m Member) bool { return m.NoFailover || m.NoTarget != "" })
}

func (v View) hasRegion(r string) bool {
	return slices.ContainsFunc(v.Members, func(m Member) bool { return m.Region == r })
}

// met says whether a resolved condition holds, and why (or why not).
func met(c Check, v View) (bool, string) {
	count := 1
	if c.Count != "" {
		count, _ = parseCount(c.Count)
	}
	where := ""
	switch {
	case c.Region != "":
		where = " in region " + c.Region
	case c.OutsideRegion != "":
		where = " outside region " + c.OutsideRegion
	}
	switch c.Condition {
	case CondLagUnder:
		limit, _ := parseBytes(c.Bytes)
		var ok []string
		for _, m := range v.replicas(c.Region, c.OutsideRegion) {
			if m.LagBytes >= 0 && m.LagBytes < limit {
				ok = append(ok, m.Name)
			}
		}
		return len(ok) >= count, fmt.Sprintf("%d healthy replicas%s lag under %d bytes%s (want %d)", len(ok), where, limit, names(ok), count)
	case CondHealthyReplicas:
		var ok []string
		for _, m := range v.replicas(c.Region, c.OutsideRegion) {
			ok = append(ok, m.Name)
		}
		return len(ok) >= count, fmt.Sprintf("%d healthy replicas%s%s (want %d)", len(ok), where, names(ok), count)
	case CondReposCaughtUp:
		if v.ReposUnknown != "" {
			return false, "the repositories' state is unknown: " + v.ReposUnknown
		}
		var behind []string
		for _, r := range v.Repos {
			if !r.CaughtUp {
				behind = append(behind, r.Name)
			}
		}
		if len(behind) > 0 {
			return false, "repositories not caught up: " + strings.Join(behind, ", ")
		}
		return true, fmt.Sprintf("all %d repositories caught up", len(v.Repos))
	case CondPrimaryInRegion, CondPrimaryNotInRegion:
		in := v.Primary != "" && v.primaryRegion() == c.Region
		want := c.Condition == CondPrimaryInRegion
		return in == want, fmt.Sprintf("the primary %s is in region %s", orNone(v.Primary), orNone(v.primaryRegion()))
	}
	return false, fmt.Sprintf("unknown condition %q", c.Condition)
}

func names(ns []string) string {
	if len(ns) == 0 {
		return ""
	}
	return " (" + strings.Join(ns, ", ") + ")"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// target picks the node a switchover goes to, from the view: ToNode as
// named; the least lagging healthy replica in ToRegion or outside
// AwayFromRegion (then by name); prev for ToPrevious. noop says the
// primary already is where the body wants it (nothing to do).
func target(b Body, v View, prev string) (node string, noop bool, err error) {
	switch {
	case b.ToPrevious:
		if prev == "" {
			return "", false, fmt.Errorf("to_previous: no previous primary recorded")
		}
		if v.Primary == prev {
			return prev, true, nil
		}
		return prev, false, targetOK(v, prev, "to_previous")
	case b.ToNode != "":
		if v.Primary == b.ToNode {
			return b.ToNode, true, nil
		}
		return b.ToNode, false, targetOK(v, b.ToNode, "to_node")
	case b.ToRegion != "":
		if v.Primary != "" && v.primaryRegion() == b.ToRegion {
			return v.Primary, true, nil
		}
		return best(v.targets(b.ToRegion, ""), "to_region", "in region "+b.ToRegion)
	case b.AwayFromRegion != "":
		if v.Primary != "" && v.primaryRegion() != b.AwayFromRegion {
			return v.Primary, true, nil
		}
		return best(v.targets("", b.AwayFromRegion), "away_from_region", "outside region "+b.AwayFromRegion)
	}
	return "", false, fmt.Errorf("switchover: no target")
}

func replicaOK(v View, node, field string) error {
	m, ok := v.member(node)
	switch {
	case !ok:
		return fmt.Errorf("%s: %q is not a member of cluster %s", field, node, v.Cluster)
	case m.Role != RoleReplica || !m.Healthy:
		return fmt.Errorf("%s: %s is not a healthy replica (role %s, healthy %t)", field, node, orNone(m.Role), m.Healthy)
	}
	return nil
}

// targetOK: node is a replica the switchover would take as its target.
func targetOK(v View, node, field string) error {
	if err := replicaOK(v, node, field); err != nil {
		return err
	}
	switch m, _ := v.member(node); {
	case m.NoFailover:
		return fmt.Errorf("%s: %s is tagged no-failover: never a switchover target", field, node)
	case m.NoTarget != "":
		return fmt.Errorf("%s: %s cannot take over now: %s", field, node, m.NoTarget)
	}
	return nil
}

func best(ms []Member, field, where string) (string, bool, error) {
	if len(ms) == 0 {
		return "", false, fmt.Errorf("%s: no healthy replica %s", field, where)
	}
	slices.SortFunc(ms, func(a, b Member) int {
		la, lb := lagKey(a.LagBytes), lagKey(b.LagBytes)
		switch {
		case la < lb:
			return -1
		case la > lb:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return ms[0].Name, false, nil
}

// lagKey orders an unknown lag (-1) last.
func lagKey(l int64) uint64 {
	if l < 0 {
		return ^uint64(0)
	}
	return uint64(l)
}

// RunActor is how a run's own actions name it (the actor of its pause,
// kept as the cluster's paused_by), so that a pause by anyone else is
// told apart.
func RunActor(runbook, runID string) string {
	return fmt.Sprintf("runbook %s (run %s)", runbook, runID)
}

// pausedByRun: the pause in effect was the run's own.
func (v View) pausedByRun(runID string) bool {
	return strings.Contains(v.PausedBy, "(run "+runID+")")
}
