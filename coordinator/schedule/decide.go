package schedule

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/duration"
)

// Member roles as the leader's status judges them (coordinator/server).
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// Run results. ResultRunning is a run in flight (an intent without result).
const (
	ResultRunning   = ""
	ResultOK        = "ok"
	ResultFailed    = "failed"
	ResultCancelled = "cancelled"
	ResultTimeout   = "timeout"
	ResultSkipped   = "skipped"
	// ResultNotStarted: the order was not written, or the agent refused
	// it before starting (busy, expired, stopping). It does not count as
	// the tier's run of its slot: the tier stays due.
	ResultNotStarted = "not_started"
)

// MaxRetry bounds the doubling wait before a tier whose runs never
// started is tried again (Input.Retry).
const MaxRetry = time.Hour

// Finished reports whether result ends a run.
func Finished(result string) bool { return result != ResultRunning }

// counts reports whether a run with result counts as its tier's run of
// its slot (everything but a run that never started).
func counts(result string) bool { return result != ResultNotStarted }

// Member is what the leader knows of one member right now.
type Member struct {
	Name string
	// Role: RolePrimary, RoleReplica, or anything else (fenced, stopped,
	// unknown), which never runs a backup.
	Role        string
	Healthy     bool
	Connectable bool
	Fenced      bool
	LagBytes    int64
	// Timeline is the member's timeline (0: not reported); a replica on
	// the primary's timeline is preferred.
	Timeline uint32
	// ReplayLag is how far the member's replay is behind the primary's
	// LSN, in bytes (-1: not known); the least goes first.
	ReplayLag int64
	// Stream: the member's agent has its command stream open on this
	// leader (an order to it can be written now); preferred.
	Stream bool
}

// Run is one recorded run, as the replicated state holds it.
type Run struct {
	ID   string
	Tier string
	// Type is what ran (full when a diff or incr tier had no base).
	Type string
	Node string
	// Slot is the scheduled time the run makes (zero: manual).
	Slot     time.Time
	Started  time.Time
	Finished time.Time
	Result   string // ResultRunning while in flight
	Timeout  time.Duration
	// Due is when the run is over its timeout on the clock of Input.Now
	// (the Runner's: for an inherited run, counted from its takeover);
	// zero: Started + Timeout. Grace is added to it.
	Due time.Time
	// CancelAt: the cancel order went out (the run is cleaning up), with
	// CancelResult to record when it ends; CleanupBy is when the leader
	// stops waiting for the agent's answer (zero: CancelAt +
	// Input.Cleanup).
	CancelAt     time.Time
	CancelResult string
	CleanupBy    time.Time
}

// Cleaning reports whether the run is cleaning up after a cancel order.
func (r Run) Cleaning() bool { return !r.CancelAt.IsZero() && !Finished(r.Result) }

// Input is the leader's view of one cluster for one decision.
type Input struct {
	Now time.Time
	// Policy is the cluster's effective backup policy (policy.Default when
	// none was set), normalized.
	Policy policy.Policy
	// Runs are the recorded runs, any order (the bounded record keeps the
	// newest run of every tier of the policy and the newest successful
	// full, so compaction never makes a tier look as if it never ran).
	Runs    []Run
	Members []Member
	// Primary is the recorded primary ("" = none).
	Primary string
	Paused  bool
	// FullKnown: a successful full backup is known besides the runs (a
	// repository listing an agent reported). Nothing reports one yet.
	FullKnown bool
	// Since is when a tier that never ran counts its slots from when the
	// policy carries no time of its own (the defaults): the cluster's
	// creation, so that a new cluster's first runs come at the tiers'
	// next slots instead of every default tier at once.
	Since time.Time
	// Grace is added to a run's timeout before the leader records it as
	// timed out, so that the agent's own answer (it stops the run at its
	// timeout and cleans up) arrives first when it can.
	Grace time.Duration
	// Cleanup bounds how long a cancelled run may clean up before the
	// leader records it ended without the agent's answer.
	Cleanup time.Duration
	// Retry is how long after a run that never started its tier is tried
	// again (0: on the next tick), doubled for each further such run of
	// the tier since its last run, up to MaxRetry, so that an agent
	// refusing every order does not fill the bounded record.
	Retry time.Duration
	// Known are the cluster's recorded members (nil: not checked): a run
	// in flight on a member that is no longer one ends at once.
	Known []string
}

// Action is what the leader does.
type Action int

// Actions.
const (
	// None: nothing this tick (Reasons say why).
	None Action = iota
	// Start: record an intent and order Node to back up.
	Start
	// Skip: record the slot as skipped (no candidate for standby-only).
	Skip
	// Cancel: the run in flight (RunID) outlived its timeout: record the
	// step "cancel" with Result and send its agent a cancel order; it
	// cleans up, still in flight, until the agent answers or its clean-up
	// deadline.
	Cancel
	// End: record the run in flight (RunID) ended with Result: its
	// clean-up deadline passed, or its member left the cluster.
	End
)

func (a Action) String() string {
	switch a {
	case None:
		return "none"
	case Start:
		return "start"
	case Skip:
		return "skip"
	case Cancel:
		return "cancel"
	case End:
		return "end"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Decision is what Decide returns.
type Decision struct {
	Action Action
	// Start and Skip: the tier, the type to run, the node (Start only),
	// the slot made (zero for a manual run), how many slots it covers, and
	// the tier's timeout and repositories.
	Tier    string
	Type    string
	Node    string
	Slot    time.Time
	Missed  int
	Timeout time.Duration
	Repos   []string
	// Cancel: the run and the result to record.
	RunID  string
	Result string
	// Reasons say, in words, why.
	Reasons []string
}

// Reason is the reasons joined, for logs and records.
func (d Decision) Reason() string { return strings.Join(d.Reasons, "; ") }

// Errors of Manual.
var (
	ErrUnknownTier = errors.New("unknown tier")
	ErrBusy        = errors.New("another backup of the cluster is running")
	ErrNoCandidate = errors.New("no member can run the backup")
)

// inFlight returns the runs without a result, oldest first.
func inFlight(runs []Run) []Run {
	var out []Run
	for _, r := range runs {
		if !Finished(r.Result) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Run) int { return a.Started.Compare(b.Started) })
	return out
}

// lastByTier is each tier's newest run (by start; ties by id).
func lastByTier(runs []Run) map[string]time.Time {
	last := map[string]time.Time{}
	for _, r := range runs {
		if !counts(r.Result) {
			continue // never started: the tier stays due
		}
		if t, ok := last[r.Tier]; !ok || r.Started.After(t) {
			last[r.Tier] = r.Started
		}
	}
	return last
}

func describe(r Run, now time.Time) string {
	return fmt.Sprintf("run %s of tier %s (%s) on %s, started %s ago", r.ID, r.Tier, r.Type, r.Node,
		duration.Format(now.Sub(r.Started).Round(time.Second)))
}

// Decide is the scheduler's decision for one cluster; see the package
// documentation for the rules.
func Decide(in Input) Decision {
	if fl := inFlight(in.Runs); len(fl) > 0 && fl[0].Cleaning() {
		// Even while paused: ending a run whose clean-up deadline passed
		// is bookkeeping, not a backup (an operator's cancel while paused
		// would otherwise hold the cluster's manual runs until Resume).
		r := fl[0]
		by := r.CleanupBy
		if by.IsZero() {
			by = r.CancelAt.Add(in.Cleanup)
		}
		if !in.Now.Before(by) {
			return Decision{Action: End, RunID: r.ID, Tier: r.Tier, Type: r.Type, Node: r.Node, Result: orResult(r.CancelResult),
				Reasons: []string{fmt.Sprintf("%s: no answer to its cancel order within the clean-up deadline of %s", describe(r, in.Now), duration.Format(in.Cleanup))}}
		}
	}
	if in.Paused {
		return Decision{Reasons: []string{"cluster paused (maintenance mode): no backup is scheduled"}}
	}
	if fl := inFlight(in.Runs); len(fl) > 0 {
		r := fl[0]
		if in.Known != nil && !slices.Contains(in.Known, r.Node) {
			return Decision{Action: End, RunID: r.ID, Tier: r.Tier, Type: r.Type, Node: r.Node, Result: ResultCancelled,
				Reasons: []string{fmt.Sprintf("%s: %s is no longer a member of the cluster", describe(r, in.Now), r.Node)}}
		}
		if r.Cleaning() {
			by := r.CleanupBy
			if by.IsZero() {
				by = r.CancelAt.Add(in.Cleanup)
			}
			return Decision{Reasons: []string{fmt.Sprintf("%s is cleaning up after its cancel order; never two backups of a cluster at once (clean-up deadline at %s)",
				describe(r, in.Now), by.UTC().Format(time.RFC3339))}}
		}
		due := r.Due
		if due.IsZero() {
			due = r.Started.Add(r.Timeout)
		}
		end := due.Add(in.Grace)
		if r.Timeout > 0 && !in.Now.Before(end) {
			return Decision{Action: Cancel, RunID: r.ID, Tier: r.Tier, Type: r.Type, Node: r.Node, Result: ResultTimeout,
				Reasons: []string{fmt.Sprintf("%s: over its timeout of %s (no result recorded)", describe(r, in.Now), duration.Format(r.Timeout))}}
		}
		return Decision{Reasons: []string{fmt.Sprintf("%s is in flight; never two backups of a cluster at once (timeout at %s)",
			describe(r, in.Now), end.UTC().Format(time.RFC3339))}}
	}
	due, err := policy.Due(effective(in), lastByTier(in.Runs), in.Now)
	if err != nil {
		return Decision{Reasons: []string{fmt.Sprintf("cannot schedule: %v", err)}}
	}
	if len(due) == 0 {
		return Decision{Reasons: []string{nextReason(in)}}
	}
	// The tier waiting longest goes first (policy.Due puts fulls first on
	// equal slots): a tier whose runs outlast its interval must not starve
	// the others.
	run := slices.MinFunc(due, func(a, b policy.Run) int { return a.At.Compare(b.At) })
	tier, _ := in.Policy.TierByName(run.Tier)
	if in.Retry > 0 {
		// Each run of the tier that never started since its last run
		// doubles the wait (up to MaxRetry): an agent refusing every
		// order must not fill the bounded record with one run per Retry.
		since := lastByTier(in.Runs)[tier.Name]
		var newest Run
		k := 0
		for _, r := range in.Runs {
			if r.Tier == tier.Name && r.Result == ResultNotStarted && r.Started.After(since) {
				k++
				if newest.ID == "" || r.Started.After(newest.Started) {
					newest = r
				}
			}
		}
		if k > 0 {
			wait := in.Retry << min(k-1, 20)
			if wait <= 0 || wait > MaxRetry {
				wait = max(MaxRetry, in.Retry)
			}
			if in.Now.Before(newest.Started.Add(wait)) {
				why := fmt.Sprintf("tier %s is due, but its run %s did not start (%s ago); tried again at %s",
					tier.Name, newest.ID, duration.Format(in.Now.Sub(newest.Started).Round(time.Second)), newest.Started.Add(wait).UTC().Format(time.RFC3339))
				if k > 1 {
					why += fmt.Sprintf(" (%d runs of the tier did not start since its last run: the wait doubles)", k)
				}
				return Decision{Reasons: []string{why}}
			}
		}
	}
	d := Decision{Action: Start, Tier: tier.Name, Slot: run.At, Missed: run.Missed, Timeout: tier.Timeout,
		Repos: slices.Clone(tier.Repos)}
	if run.Missed > 1 {
		more := ""
		if run.Missed >= policy.MaxCountedMissed {
			more = " or more"
		}
		d.Reasons = append(d.Reasons, fmt.Sprintf("tier %s due since %s: %d%s slots missed, one catch-up run",
			tier.Name, run.At.UTC().Format(time.RFC3339), run.Missed, more))
	} else {
		d.Reasons = append(d.Reasons, fmt.Sprintf("tier %s due at %s", tier.Name, run.At.UTC().Format(time.RFC3339)))
	}
	var why string
	d.Type, why = runType(in, tier)
	if why != "" {
		d.Reasons = append(d.Reasons, why)
	}
	node, why, ok := place(in, tier)
	d.Reasons = append(d.Reasons, why)
	switch {
	case ok:
		d.Node = node
	case tier.RunOn == policy.RunOnStandbyOnly:
		d.Action = Skip
	default:
		return Decision{Reasons: append(d.Reasons, "the tier stays due and runs once a member can take it")}
	}
	return d
}

// effective is the policy Due reads: with Since as its time when it has
// none.
func effective(in Input) policy.Policy {
	p := in.Policy
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = in.Since
	}
	return p
}

// nextReason says when the next run is due.
func nextReason(in Input) string {
	runs, err := policy.NextRuns(effective(in), lastByTier(in.Runs), in.Now)
	if err != nil || len(runs) == 0 {
		return "nothing due"
	}
	next := runs[0]
	for _, r := range runs[1:] {
		if r.At.Before(next.At) {
			next = r
		}
	}
	return fmt.Sprintf("nothing due; next: tier %s at %s", next.Tier, next.At.UTC().Format(time.RFC3339))
}

// runType is the type a run of tier makes: a diff or incr tier runs a
// full when no successful full is known.
func runType(in Input, tier policy.Tier) (string, string) {
	if tier.Type == policy.TypeFull || in.FullKnown {
		return tier.Type, ""
	}
	for _, r := range in.Runs {
		if r.Type == policy.TypeFull && r.Result == ResultOK {
			return tier.Type, ""
		}
	}
	return policy.TypeFull, fmt.Sprintf("runs a full instead of %s: no successful full backup is known to base it on", tier.Type)
}

// usable: the member can run a backup now.
func usable(m Member) bool { return m.Healthy && m.Connectable && !m.Fenced }

// place picks the node for tier, with the reason; ok false when none fits.
func place(in Input, tier policy.Tier) (node, why string, ok bool) {
	members := slices.Clone(in.Members)
	var tli uint32
	for _, m := range members {
		if m.Name == in.Primary && m.Role == RolePrimary {
			tli = m.Timeline
		}
	}
	// Preferred first: the command stream open (the order can be written
	// now), on the primary's timeline, the least replay lag (unknown
	// last), then by name.
	rank := func(m Member) (int, int, int64) {
		s, t := 1, 1
		if m.Stream {
			s = 0
		}
		if tli == 0 || m.Timeline == tli {
			t = 0
		}
		lag := m.ReplayLag
		if lag < 0 {
			lag = math.MaxInt64
		}
		return s, t, lag
	}
	slices.SortFunc(members, func(a, b Member) int {
		as, at, al := rank(a)
		bs, bt, bl := rank(b)
		if c := cmp.Compare(as, bs); c != 0 {
			return c
		}
		if c := cmp.Compare(at, bt); c != 0 {
			return c
		}
		if c := cmp.Compare(al, bl); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var replica, primary *Member
	var notes []string
	for i := range members {
		m := &members[i]
		switch {
		case m.Name == in.Primary && m.Role == RolePrimary && usable(*m):
			primary = m
		case m.Name != in.Primary && m.Role == RoleReplica && usable(*m):
			if replica == nil {
				replica = m
			}
		case m.Name != in.Primary:
			notes = append(notes, fmt.Sprintf("%s is not a healthy replica (role %s)", m.Name, orUnknown(m.Role)))
		}
	}
	noReplica := "no healthy replica"
	if len(notes) > 0 {
		slices.Sort(notes)
		noReplica += " (" + strings.Join(notes, ", ") + ")"
	}
	switch tier.RunOn {
	case policy.RunOnPrimary:
		if primary != nil {
			return primary.Name, fmt.Sprintf("on the primary %s (run_on primary)", primary.Name), true
		}
		return "", fmt.Sprintf("run_on primary: the primary %s is not healthy", orNone(in.Primary)), false
	case policy.RunOnStandbyOnly:
		if replica != nil {
			return replica.Name, fmt.Sprintf("on replica %s, %s (run_on standby-only)", replica.Name, replicaWhy(*replica, tli)), true
		}
		return "", "run_on standby-only: " + noReplica + "; slot skipped", false
	default:
		if replica != nil {
			return replica.Name, fmt.Sprintf("on replica %s, %s (run_on prefer-standby)", replica.Name, replicaWhy(*replica, tli)), true
		}
		if primary != nil {
			return primary.Name, fmt.Sprintf("on the primary %s: %s (run_on prefer-standby)", primary.Name, noReplica), true
		}
		return "", fmt.Sprintf("run_on prefer-standby: %s and the primary %s is not healthy", noReplica, orNone(in.Primary)), false
	}
}

// replicaWhy says why replica m was chosen.
func replicaWhy(m Member, tli uint32) string {
	var p []string
	if !m.Stream {
		p = append(p, "no command stream open (no other replica has one)")
	}
	switch {
	case tli != 0 && m.Timeline == tli:
		p = append(p, fmt.Sprintf("on the primary's timeline %d", tli))
	case tli != 0:
		p = append(p, fmt.Sprintf("on timeline %d, not the primary's %d (no replica on it)", m.Timeline, tli))
	}
	if m.ReplayLag >= 0 {
		p = append(p, fmt.Sprintf("replay lag %d bytes, the least", m.ReplayLag))
	} else {
		p = append(p, "replay lag unknown")
	}
	return strings.Join(p, ", ")
}

func orResult(s string) string {
	if s == "" {
		return ResultTimeout
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(none recorded)"
	}
	return s
}

// Manual is the decision for an operator's run of tierName now: a Start,
// or an error wrapping ErrUnknownTier, ErrBusy or ErrNoCandidate that says
// which tiers exist, which run is in flight, or why no member fits.
func Manual(in Input, tierName string) (Decision, error) {
	tier, ok := in.Policy.TierByName(tierName)
	if !ok {
		var names []string
		for _, t := range in.Policy.Tiers {
			names = append(names, t.Name)
		}
		return Decision{}, fmt.Errorf("%w %q: the cluster's tiers are %s", ErrUnknownTier, tierName, strings.Join(names, ", "))
	}
	if fl := inFlight(in.Runs); len(fl) > 0 {
		return Decision{}, fmt.Errorf("%w: %s; wait for it (pgdrctl backups)", ErrBusy, describe(fl[0], in.Now))
	}
	d := Decision{Action: Start, Tier: tier.Name, Timeout: tier.Timeout, Repos: slices.Clone(tier.Repos),
		Reasons: []string{fmt.Sprintf("tier %s run on request", tier.Name)}}
	var why string
	if d.Type, why = runType(in, tier); why != "" {
		d.Reasons = append(d.Reasons, why)
	}
	node, why, ok := place(in, tier)
	if !ok {
		return Decision{}, fmt.Errorf("%w: %s", ErrNoCandidate, strings.TrimSuffix(why, "; slot skipped"))
	}
	d.Node = node
	d.Reasons = append(d.Reasons, why)
	return d, nil
}
