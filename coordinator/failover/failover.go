package failover

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/wal"
)

// TagNoFailover on a member excludes it from automatic promotion.
const TagNoFailover = "no-failover"

// DefaultMaxLag is the lag limit used when Policy.MaxLagOnFailover is 0.
const DefaultMaxLag = 1 << 20

// Member is what the leader knows of one member right now.
type Member struct {
	Name, Region string
	// Tags: TagNoFailover excludes the member from promotion.
	Tags []string
	// Priority: higher is preferred, after received LSN.
	Priority int32
	// Fresh: a report arrived within stale_after. Every other field is only
	// as good as that report.
	Fresh bool
	// SampledAfter: a time on the leader's clock (with the monotonic
	// reading) before which that report's checks cannot have begun: when
	// this leader sent the command the report names as the latest its
	// agent had received before sampling (zero: unknown, e.g. a command of
	// another leader, or an older agent that names none). When the leader
	// received the report is no such bound: an agent sends its cached
	// report again when a new session opens.
	SampledAfter                                                time.Time
	PostmasterAlive, Connectable, InRecovery, Streaming, Fenced bool
	Timeline                                                    uint32
	ReceiveLSN, ReplayLSN                                       uint64
	// Synchronous: a synchronous standby that holds every acknowledged
	// commit (meaningful in synchronous mode only).
	Synchronous bool
	// SyncNote: why the member is not Synchronous (for the reason).
	SyncNote string
	// RefusesPromotion, when set, is why the agent refuses promotion, e.g.
	// it acknowledged the primary's failsafe ping within the lease TTL.
	RefusesPromotion string
}

// Policy is the cluster's failover policy.
type Policy struct {
	// MaxLagOnFailover in bytes; 0 means DefaultMaxLag.
	MaxLagOnFailover uint64
	// PreferredRegions: earlier is preferred; unlisted regions rank last.
	PreferredRegions []string
	// Synchronous: "", "off", "on" or "quorum N". Anything but "" and "off"
	// is synchronous mode.
	Synchronous string
	// MinInterval: no second failover within it after the last one.
	MinInterval time.Duration
}

// Input is the leader's whole view of one cluster for one decision.
type Input struct {
	Cluster string
	Primary string
	Epoch   uint64
	Paused  bool
	// LeaseExpiresAt is the primary's lease as the leader knows it, counted
	// from when the leader received the last renewal (zero: never granted).
	LeaseExpiresAt time.Time
	Members        map[string]Member
	Policy         Policy
	LastFailoverAt time.Time
	// PrimaryLastLSN is the highest LSN the primary reported while writable
	// at this epoch (0: unknown). It must never be lowered by a report that
	// carries no LSN (PostgreSQL down): that would turn the lag limit off.
	PrimaryLastLSN uint64
	// Forced is an operator's --force (manual failover): an unknown
	// PrimaryLastLSN does not reject a member. The automatic failover never
	// sets it.
	Forced bool
	// PrimaryPromoted: the recorded primary is known to have completed its
	// promotion at Epoch (history records it, or it was the initial
	// primary). A recorded primary that is not, and reports in recovery,
	// was never promoted (rule 2a).
	PrimaryPromoted bool
	Now             time.Time
}

// Action is what the leader should do.
type Action int

const (
	// ActionNone: nothing to do (healthy, paused, guarded or no candidate).
	ActionNone Action = iota
	// ActionWait: the primary is unhealthy but may still hold its lease;
	// decide again later.
	ActionWait
	// ActionPromote: promote Decision.Candidate.
	ActionPromote
	// ActionRepromote: the recorded primary (Decision.Candidate) is a
	// replica that was never promoted (its promote order was lost, failed,
	// or its leader died first); order it to promote again at the current
	// epoch. No new primary is chosen and the epoch does not change.
	ActionRepromote
)

// String returns "none", "wait" or "promote".
func (a Action) String() string {
	switch a {
	case ActionNone:
		return "none"
	case ActionWait:
		return "wait"
	case ActionPromote:
		return "promote"
	case ActionRepromote:
		return "repromote"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is Decide's answer.
type Decision struct {
	Action Action
	// Candidate is the member to promote (ActionPromote only).
	Candidate string
	// Reason is one human sentence, always set.
	Reason string
	// Rejected maps each non-primary member that is not a candidate to why;
	// set once the members were judged (rules 6 and later), nil before.
	Rejected map[string]string
	// Refused is why no member is promoted, as one of a fixed set
	// (Refused*: a metric label), when the primary is unhealthy and the
	// action is ActionNone; "" otherwise.
	Refused string
	// Ranked lists the members that qualify, best first: Candidate is
	// Ranked[0] when promoting; with a failsafe refusal it is who would have
	// been promoted. Empty when the members were not judged or none qualified.
	Ranked []string
}

// Why a failover of an unhealthy primary was decided against
// (Decision.Refused): a small fixed set, for metric labels.
const (
	RefusedPaused         = "paused"          // the cluster is paused
	RefusedFailsafe       = "failsafe"        // a member acknowledged the primary's failsafe ping
	RefusedMinInterval    = "min_interval"    // the last failover was too recent
	RefusedLag            = "lag"             // a member could be promoted but for its lag (or the primary's unknown LSN)
	RefusedNotSynchronous = "not_synchronous" // a member could be promoted but is not a synchronous standby
	RefusedNoCandidate    = "no_candidate"    // no other member, or none that is healthy
)

// PrimaryHealthy reports whether m can be trusted as a working primary:
// a fresh report, postmaster alive, connectable, not in recovery, not fenced.
func PrimaryHealthy(m Member) bool {
	return PrimaryProblem(m) == ""
}

// PrimaryProblem is why m is not a healthy primary, or "".
func PrimaryProblem(m Member) string {
	switch {
	case !m.Fresh:
		return "no fresh report"
	case !m.PostmasterAlive:
		return "postmaster not running"
	case !m.Connectable:
		return "not connectable"
	case m.InRecovery:
		return "in recovery"
	case m.Fenced:
		return "fenced"
	}
	return ""
}

// UnpromotedPrimary reports whether m, the recorded primary, is a running
// replica that can still be promoted: a fresh report, postmaster alive,
// connectable, in recovery, not fenced. Such a primary was recorded but its
// promotion never happened; re-sending the promote order at the current
// epoch completes that decision, and no other member is chosen.
func UnpromotedPrimary(m Member) bool {
	return m.Fresh && m.PostmasterAlive && m.Connectable && m.InRecovery && !m.Fenced
}

// Decide applies the rules described in the package documentation. It does
// not modify in.
func Decide(in Input) Decision {
	if in.Primary == "" {
		return Decision{Action: ActionNone, Reason: "no primary recorded; nothing to fail over"}
	}
	pm, known := in.Members[in.Primary]
	problem := "no report from it"
	if known {
		problem = PrimaryProblem(pm)
	}
	if problem == "" {
		return Decision{Action: ActionNone, Reason: fmt.Sprintf("primary %s healthy", in.Primary)}
	}
	if known && !in.PrimaryPromoted && UnpromotedPrimary(pm) {
		switch {
		case pm.RefusesPromotion != "":
			return Decision{Action: ActionNone, Refused: RefusedFailsafe, Reason: fmt.Sprintf(
				"primary %s is recorded but still in recovery, and refuses promotion (%s); no failover", in.Primary, pm.RefusesPromotion)}
		case in.Paused:
			return Decision{Action: ActionNone, Refused: RefusedPaused, Reason: fmt.Sprintf(
				"cluster paused: primary %s is recorded but still in recovery (never promoted); reported, not acted on ('pgdrctl failover --to %s' promotes it)", in.Primary, in.Primary)}
		}
		return Decision{Action: ActionRepromote, Candidate: in.Primary, Reason: fmt.Sprintf(
			"primary %s is recorded at epoch %d but still in recovery (never promoted); ordering it to promote again", in.Primary, in.Epoch)}
	}
	if in.Paused {
		return Decision{Action: ActionNone, Refused: RefusedPaused, Reason: fmt.Sprintf(
			"cluster paused: primary %s is unhealthy (%s); reported, not acted on", in.Primary, problem)}
	}
	if in.Now.Before(in.LeaseExpiresAt) {
		left := in.LeaseExpiresAt.Sub(in.Now)
		return Decision{Action: ActionWait, Reason: fmt.Sprintf(
			"primary %s is unhealthy (%s) but its lease runs %s more (until %s); waiting for it to expire",
			in.Primary, problem, left, in.LeaseExpiresAt.UTC().Format(time.RFC3339Nano))}
	}
	if !in.LastFailoverAt.IsZero() && in.Policy.MinInterval > 0 {
		if since := in.Now.Sub(in.LastFailoverAt); since < in.Policy.MinInterval {
			next := in.LastFailoverAt.Add(in.Policy.MinInterval)
			return Decision{Action: ActionNone, Refused: RefusedMinInterval, Reason: fmt.Sprintf(
				"primary %s is unhealthy (%s) but the last failover was %s ago; the next may happen at %s (in %s)",
				in.Primary, problem, since, next.UTC().Format(time.RFC3339Nano), next.Sub(in.Now))}
		}
	}

	j := judgeMembers(in)
	names, rejected, candidates, ranked, refusing, noCandidate := j.names, j.rejected, j.candidates, j.ranked, j.refusing, j.noCandidate
	if refusing != "" {
		return Decision{Action: ActionNone, Refused: RefusedFailsafe, Rejected: rejected, Ranked: ranked, Reason: fmt.Sprintf(
			"primary alive per %s's failsafe acknowledgement; no failover", refusing)}
	}
	if len(candidates) == 0 {
		if len(names) == 0 {
			return Decision{Action: ActionNone, Refused: RefusedNoCandidate, Rejected: rejected, Reason: fmt.Sprintf(
				"no candidate: primary %s is unhealthy (%s) and there is no other member", in.Primary, problem)}
		}
		parts := make([]string, 0, len(names))
		for _, n := range names {
			parts = append(parts, n+": "+rejected[n])
		}
		return Decision{Action: ActionNone, Refused: noCandidate, Rejected: rejected, Reason: "no candidate: " + strings.Join(parts, "; ")}
	}

	best := candidates[0]
	return Decision{
		Action:    ActionPromote,
		Candidate: best.Name,
		Rejected:  rejected,
		Ranked:    ranked,
		Reason: fmt.Sprintf(
			"primary %s is unhealthy (%s) and its lease has expired; promoting %s (receive LSN %s, priority %d, region %q, timeline %d)",
			in.Primary, problem, best.Name, FormatLSN(best.ReceiveLSN), best.Priority, best.Region, best.Timeline),
	}
}

// judgement is how judgeMembers found the members other than the primary.
type judgement struct {
	names       []string // sorted
	rejected    map[string]string
	candidates  []Member // best first
	ranked      []string // candidates' names
	refusing    string   // the first fresh member that acknowledged the primary's failsafe ping
	noCandidate string   // the Refused code when there is no candidate
}

// judgeMembers judges every member but the primary as a failover
// candidate (Decide's rules 6 and later).
func judgeMembers(in Input) judgement {
	names := make([]string, 0, len(in.Members))
	for n := range in.Members {
		if n != in.Primary {
			names = append(names, n)
		}
	}
	sort.Strings(names)

	maxLag := in.Policy.MaxLagOnFailover
	if maxLag == 0 {
		maxLag = DefaultMaxLag
	}
	syncMode := SynchronousMode(in.Policy.Synchronous)
	var topTimeline uint32
	for _, n := range names {
		if m := in.Members[n]; m.Fresh && m.InRecovery && m.Timeline > topTimeline {
			topTimeline = m.Timeline
		}
	}

	rejected := map[string]string{}
	var candidates []Member
	refusing := ""
	noCandidate := RefusedNoCandidate
	for _, n := range names {
		m := in.Members[n]
		m.Name = n // the map key is authoritative
		if m.Fresh && m.RefusesPromotion != "" && refusing == "" {
			refusing = n
		}
		if why, code := rejection(m, in.PrimaryLastLSN, maxLag, topTimeline, syncMode, in.Forced); why != "" {
			rejected[n] = why
			if code == RefusedLag || (code == RefusedNotSynchronous && noCandidate == RefusedNoCandidate) {
				noCandidate = code
			}
			continue
		}
		candidates = append(candidates, m)
	}

	sort.SliceStable(candidates, func(i, j int) bool {
		a, b := candidates[i], candidates[j]
		if a.ReceiveLSN != b.ReceiveLSN {
			return a.ReceiveLSN > b.ReceiveLSN
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		ra, rb := regionRank(in.Policy.PreferredRegions, a.Region), regionRank(in.Policy.PreferredRegions, b.Region)
		if ra != rb {
			return ra < rb
		}
		return a.Name < b.Name
	})
	var ranked []string
	for _, c := range candidates {
		ranked = append(ranked, c.Name)
	}
	return judgement{names: names, rejected: rejected, candidates: candidates, ranked: ranked, refusing: refusing, noCandidate: noCandidate}
}

// Candidates lists the members a failover would promote, best first, if
// the primary were lost now with its lease expired: Decide's judgement of
// the members whatever the primary's health, a pause or the last
// failover's time.
func Candidates(in Input) []string {
	return judgeMembers(in).ranked
}

// rejection is why m may not be promoted, or "" if it may, and its
// Refused code when it is the lag or synchronous mode alone
// (RefusedNoCandidate otherwise). Checks run in a fixed order and the
// first failure is the reason.
func rejection(m Member, primaryLSN, maxLag uint64, topTimeline uint32, syncMode, forced bool) (why, code string) {
	code = RefusedNoCandidate
	switch {
	case !m.Fresh:
		return "no fresh report", code
	case m.Fenced:
		return "fenced", code
	case slices.Contains(m.Tags, TagNoFailover):
		return "tagged " + TagNoFailover, code
	case m.RefusesPromotion != "":
		return "refuses promotion: " + m.RefusesPromotion, code
	case !m.PostmasterAlive:
		return "postmaster not running", code
	case !m.Connectable:
		return "not connectable", code
	case !m.InRecovery:
		return "not in recovery", code
	case m.Timeline < topTimeline:
		return fmt.Sprintf("timeline %d behind %d", m.Timeline, topTimeline), code
	case syncMode && !m.Synchronous:
		return notSynchronous(m), RefusedNotSynchronous
	case primaryLSN == 0 && !forced:
		return UnknownPrimaryLSN, RefusedLag
	}
	if lag := Lag(primaryLSN, m.ReceiveLSN); lag > maxLag {
		return fmt.Sprintf("lags %d bytes, limit %d", lag, maxLag), RefusedLag
	}
	return "", ""
}

// UnknownPrimaryLSN is the rejection of every member while the primary's
// last LSN is unknown: its lag cannot be checked against
// maximum_lag_on_failover, and guessing "no lag" could lose everything the
// primary wrote since the member last received WAL.
const UnknownPrimaryLSN = "lag unknown: no LSN of the primary is known at this epoch (only a manual failover with --force promotes)"

// Lag is how far a replica that received up to receive is behind a primary
// last seen at primary; 0 when primary is unknown (0) or not ahead. Decide
// never calls it with an unknown primary: it rejects every member first
// (UnknownPrimaryLSN) unless forced.
func Lag(primary, receive uint64) uint64 {
	if primary == 0 || primary < receive {
		return 0
	}
	return primary - receive
}

// SynchronousMode reports whether a policy.synchronous value asks for
// synchronous replication. Only "" and "off" do not; an unknown value counts
// as synchronous because that errs towards losing no acknowledged commit.
func SynchronousMode(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	return s != "" && s != "off"
}

// regionRank is region's position in preferred, or len(preferred) if absent.
func regionRank(preferred []string, region string) int {
	if i := slices.Index(preferred, region); i >= 0 && region != "" {
		return i
	}
	return len(preferred)
}

// FormatLSN writes an LSN the way PostgreSQL does, e.g. 0/3000060.
func FormatLSN(lsn uint64) string { return wal.LSN(lsn).String() }
