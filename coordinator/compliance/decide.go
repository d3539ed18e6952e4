package compliance

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// The targets a breach is of (the metric label pgdr_cluster_target_breached{target}).
const (
	TargetArchiveRPO  = "archive_rpo"
	TargetFailoverRPO = "failover_rpo"
	TargetFailover    = "failover"
	TargetRTO         = "rto"
)

// Sources of an RTO measurement.
const (
	SourceFailover   = "failover"
	SourceSwitchover = "switchover"
	SourceDrill      = "drill"
)

// RepoRPO is one repository's archive RPO as the primary reported it.
type RepoRPO struct {
	Repo    string
	Mode    string
	Bytes   uint64
	Seconds float64
}

// FailoverRPO is the best failover candidate's lag; Known is false when
// there is no candidate or no primary position to measure against.
type FailoverRPO struct {
	Known     bool
	Candidate string
	Bytes     uint64
	Seconds   float64
}

// Duration is one measured recovery time (zero Seconds with Recorded
// false: none measured).
type Duration struct {
	Recorded bool
	Source   string // SourceFailover, SourceSwitchover or SourceDrill
	Seconds  float64
	At       time.Time
}

// Measured is what the leader measured for a cluster.
type Measured struct {
	// ArchiveRPO: one per repository of the primary's latest report (nil
	// when no fresh report).
	ArchiveRPO  []RepoRPO
	FailoverRPO FailoverRPO
	// Failover: the last failover or switchover, whichever is newer.
	Failover Duration
	// Drill: the last drill's restore time.
	Drill Duration
}

// Measures reports whether m holds a measurement of target.
func (m Measured) Measures(target string) bool {
	switch target {
	case TargetArchiveRPO:
		return len(m.ArchiveRPO) > 0 // a fresh report lists every repository
	case TargetFailoverRPO:
		return m.FailoverRPO.Known
	case TargetFailover:
		return m.Failover.Recorded
	case TargetRTO:
		return m.Drill.Recorded
	}
	return true
}

// Breach is one target a measured value exceeds.
type Breach struct {
	Target   string
	Subject  string
	Measured time.Duration
	Limit    time.Duration
	Message  string
}

// Key identifies a breach across decisions: a target and its subject,
// except for the failover RPO, whose subject (the best candidate) changes
// as replicas overtake each other: one breach of the cluster's failover
// RPO, named after the current candidate.
func (b Breach) Key() string {
	if b.Target == TargetFailoverRPO {
		return b.Target
	}
	return b.Target + "/" + b.Subject
}

// Decide returns every target the measured values exceed, sorted by
// target and subject. A value equal to its target is not a breach; what
// was not measured (no report, no candidate, no drill) is not one either.
func Decide(t Targets, m Measured) []Breach {
	t = t.WithDefaults()
	var out []Breach
	over := func(target, subject string, measured float64, limit time.Duration, what string) {
		d := secondsToDuration(measured)
		if d > limit {
			out = append(out, Breach{Target: target, Subject: subject, Measured: d, Limit: limit,
				Message: fmt.Sprintf("%s %s exceeds the %s target %s", what, roundForHumans(d), targetName(target), limit)})
		}
	}
	for _, r := range m.ArchiveRPO {
		over(TargetArchiveRPO, r.Repo, r.Seconds, t.RPO, fmt.Sprintf("archive RPO of repository %s (%d bytes not archived):", r.Repo, r.Bytes))
	}
	if f := m.FailoverRPO; f.Known {
		over(TargetFailoverRPO, f.Candidate, f.Seconds, t.RPO, fmt.Sprintf("failover RPO (lag of the best candidate %s, %d bytes):", f.Candidate, f.Bytes))
	}
	if f := m.Failover; f.Recorded {
		over(TargetFailover, f.Source, f.Seconds, t.Failover, fmt.Sprintf("the last %s took", f.Source))
	}
	if d := m.Drill; d.Recorded {
		over(TargetRTO, SourceDrill, d.Seconds, t.RTO, "the last drill's restore took")
	}
	slices.SortFunc(out, func(a, b Breach) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Subject, b.Subject))
	})
	return out
}

func targetName(target string) string {
	switch target {
	case TargetArchiveRPO, TargetFailoverRPO:
		return "RPO"
	case TargetFailover:
		return "failover"
	}
	return "RTO"
}

func secondsToDuration(s float64) time.Duration {
	if s <= 0 {
		return 0
	}
	if s > MaxTarget.Seconds()*100 {
		return 100 * MaxTarget
	}
	return time.Duration(s * float64(time.Second))
}

// roundForHumans keeps a message readable: milliseconds under a minute,
// seconds above.
func roundForHumans(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
