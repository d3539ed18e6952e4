package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	// The zone database is compiled in so that every coordinator reads a
	// schedule's time zone the same way, whatever the host has installed.
	_ "time/tzdata"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/pkg/duration"
	"github.com/pgdr/pgdr/pkg/tiername"
)

// Tier types.
const (
	TypeFull = "full"
	TypeDiff = "diff"
	TypeIncr = "incr"
)

// Where a tier's run goes.
const (
	RunOnPreferStandby = "prefer-standby"
	RunOnStandbyOnly   = "standby-only"
	RunOnPrimary       = "primary"
)

// Bounds that keep the replicated state small: a policy is copied into
// every snapshot and every Status answer.
const (
	MaxTiers        = 16
	MaxRepos        = 8
	MaxNameLen      = 63
	MaxScheduleLen  = 128
	MaxTimezoneLen  = 64
	MaxKeepCount    = 100000
	MaxDuration     = 100 * 365 * 24 * time.Hour // keep_age, pitr_window
	MaxTimeout      = 7 * 24 * time.Hour
	Day             = duration.Day
	DefaultPITR     = 7 * Day
	DefaultTimezone = "UTC"
)

// DefaultTimeout is a tier's timeout when none is given: a full backup may
// take hours, a diff or incr should not.
func DefaultTimeout(typ string) time.Duration {
	if typ == TypeFull {
		return 12 * time.Hour
	}
	return 2 * time.Hour
}

// Tier is one kind of backup taken on a schedule.
type Tier struct {
	Name string
	Type string // TypeFull, TypeDiff or TypeIncr
	// Schedule is a cron expression: 5 fields (minute first), 6 (second
	// first) or a descriptor (@daily). A CRON_TZ= or TZ= prefix is moved
	// into Timezone by Normalize.
	Schedule string
	Timezone string // IANA name; "" = UTC
	// KeepCount keeps the newest N backups of the tier; KeepAge keeps those
	// younger than it. A backup is kept while either rule keeps it; zero
	// disables a rule, and at least one must be set. KeepAge alone must
	// cover the schedule's longest interval, or there would be times with
	// no backup of the tier; with KeepCount the newest is always kept.
	KeepCount int64
	KeepAge   time.Duration
	// Repos are the repositories a run must reach, by the names of the
	// agents' repos configuration; empty = every repository of the agent.
	Repos   []string
	RunOn   string // "" = RunOnPreferStandby
	Timeout time.Duration
}

// Policy is a cluster's backup policy.
type Policy struct {
	Tiers      []Tier
	PITRWindow time.Duration
	// Targets are the cluster's recovery targets; a zero field is its
	// default (compliance.DefaultTargets).
	Targets compliance.Targets
	// UpdatedAt and UpdatedBy say who set it (zero for the defaults).
	UpdatedAt time.Time
	UpdatedBy string
	// Drill schedules restore drills (nil: none; drill.go).
	Drill *Drill
	// GameDays are the cluster's DR test plans (gameday.go).
	GameDays []GameDay
}

// Default is the policy of a cluster that has none: the four tiers of the
// original design (hourly incremental kept 7 days, daily full kept 30
// days, weekly full kept 12 weeks, monthly full kept 7 years, at distinct
// minutes so that no two fall on the same slot) and a 7-day PITR window,
// all in UTC, on a standby when there is one, to every repository.
func Default() Policy {
	tier := func(name, typ, sched string, age time.Duration) Tier {
		return Tier{Name: name, Type: typ, Schedule: sched, Timezone: DefaultTimezone, KeepAge: age,
			RunOn: RunOnPreferStandby, Timeout: DefaultTimeout(typ)}
	}
	return Policy{
		Tiers: []Tier{
			tier("hourly", TypeIncr, "5 * * * *", 7*Day),
			tier("daily", TypeFull, "15 1 * * *", 30*Day),
			tier("weekly", TypeFull, "15 2 * * 0", 12*7*Day),
			tier("monthly", TypeFull, "15 3 1 * *", 7*365*Day),
		},
		PITRWindow: DefaultPITR,
	}
}

// Normalize fills the defaults of omitted tier fields (run_on, timeout,
// timezone) and moves a schedule's CRON_TZ=/TZ= prefix into Timezone, so
// that equal policies compare equal. A prefix that disagrees with an
// explicit timezone is left in place for Validate to report.
func (p *Policy) Normalize() {
	normalizeDrill(p.Drill)
	normalizeGameDays(p.GameDays)
	for i := range p.Tiers {
		t := &p.Tiers[i]
		t.Schedule = strings.Join(strings.Fields(t.Schedule), " ")
		t.Timezone = strings.TrimSpace(t.Timezone)
		if tz, rest, ok := cutTZ(t.Schedule); ok && (t.Timezone == "" || t.Timezone == tz) {
			t.Timezone, t.Schedule = tz, rest
		}
		if t.Timezone == "" {
			t.Timezone = DefaultTimezone
		}
		if t.RunOn == "" {
			t.RunOn = RunOnPreferStandby
		}
		if t.Timeout == 0 {
			t.Timeout = DefaultTimeout(t.Type)
		}
	}
}

// cutTZ splits "CRON_TZ=Zone rest" (or "TZ=Zone rest").
func cutTZ(s string) (tz, rest string, ok bool) {
	for _, p := range []string{"CRON_TZ=", "TZ="} {
		if after, found := strings.CutPrefix(s, p); found {
			tz, rest, _ = strings.Cut(after, " ")
			return tz, rest, true
		}
	}
	return "", s, false
}

// Options are what Validate checks against beyond the policy itself.
type Options struct {
	// KnownRepos, when not nil, are the repository names the agents
	// reported: a tier naming another is refused. When nil (the
	// coordinators do not know the agents' repositories) any valid name is
	// accepted and the agent refuses a run to a repository it lacks.
	KnownRepos []string
}

// Validate checks a normalized policy and returns every problem found,
// each naming its field (tiers[2].schedule: ...), joined; nil if valid.
func (p Policy) Validate(o Options) error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	switch {
	case p.PITRWindow < 0:
		bad("pitr_window", "%s is negative", duration.Format(p.PITRWindow))
	case p.PITRWindow == 0:
		// An API request that leaves the field out reads as 0: refused, so
		// that the expiry after every scheduled backup never runs with no
		// window because a field was forgotten.
		bad("pitr_window", "missing or 0: point-in-time recovery needs a window of at least 1s (the default is %s)", duration.Format(DefaultPITR))
	case p.PITRWindow > MaxDuration:
		bad("pitr_window", "%s is more than 100 years", duration.Format(p.PITRWindow))
	}
	wholeSeconds := func(field string, d time.Duration) {
		if d%time.Second != 0 {
			bad(field, "%s is not a whole number of seconds", d)
		}
	}
	wholeSeconds("pitr_window", p.PITRWindow)
	if err := p.Targets.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(p.Tiers) == 0 {
		bad("tiers", "at least one tier is needed (reset to the defaults instead to get the default tiers)")
	}
	if len(p.Tiers) > MaxTiers {
		bad("tiers", "%d tiers, at most %d", len(p.Tiers), MaxTiers)
	}
	names := map[string]int{}
	hasFull := false
	for i, t := range p.Tiers {
		f := fmt.Sprintf("tiers[%d]", i)
		if t.Name == "" {
			bad(f+".name", "required")
		} else if !tiername.Valid(t.Name) {
			bad(f+".name", "%q is not a valid tier name (%s): the agent's expire --keep-tier names a tier's backups by it", clip(t.Name), tiername.Rule)
		} else if j, dup := names[t.Name]; dup {
			bad(f+".name", "%q is also the name of tiers[%d]", t.Name, j)
		} else {
			names[t.Name] = i
		}
		switch t.Type {
		case TypeFull:
			hasFull = true
		case TypeDiff, TypeIncr:
		case "":
			bad(f+".type", "required: full, diff or incr")
		default:
			bad(f+".type", "%q: want full, diff or incr", clip(t.Type))
		}
		var interval time.Duration
		if sched, err := t.schedule(); err != nil {
			field := f + ".schedule"
			var tz *tzError
			if errors.As(err, &tz) {
				field = f + ".timezone"
			}
			bad(field, "%v", err)
		} else if interval, err = maxGap(sched); err != nil {
			bad(f+".schedule", "%q: %v", t.Schedule, err)
		}
		switch {
		case t.KeepCount < 0:
			bad(f+".keep_count", "%d is negative", t.KeepCount)
		case t.KeepCount > MaxKeepCount:
			bad(f+".keep_count", "%d is more than %d", t.KeepCount, MaxKeepCount)
		}
		switch {
		case t.KeepAge < 0:
			bad(f+".keep_age", "%s is negative", duration.Format(t.KeepAge))
		case t.KeepAge > MaxDuration:
			bad(f+".keep_age", "%s is more than 100 years", duration.Format(t.KeepAge))
		case t.KeepCount == 0 && t.KeepAge > 0 && interval > 0 && t.KeepAge < interval:
			bad(f+".keep_age", "%s is shorter than the schedule's longest interval between runs (%s): "+
				"a backup would expire before the next one is taken", duration.Format(t.KeepAge), duration.Format(interval))
		}
		wholeSeconds(f+".keep_age", t.KeepAge)
		wholeSeconds(f+".timeout", t.Timeout)
		if t.KeepCount == 0 && t.KeepAge == 0 {
			bad(f+".keep_count", "no retention: set keep_count, keep_age or both")
		}
		if len(t.Repos) > MaxRepos {
			bad(f+".repos", "%d repositories, at most %d", len(t.Repos), MaxRepos)
		}
		seen := map[string]bool{}
		for j, r := range t.Repos {
			rf := fmt.Sprintf("%s.repos[%d]", f, j)
			switch {
			case !validName(r):
				bad(rf, "%q is not a valid repository name", clip(r))
			case seen[r]:
				bad(rf, "%q is listed twice", r)
			case o.KnownRepos != nil && !slices.Contains(o.KnownRepos, r):
				bad(rf, "unknown repository %q (the agents have: %s)", r, strings.Join(o.KnownRepos, ", "))
			}
			seen[r] = true
		}
		switch t.RunOn {
		case RunOnPreferStandby, RunOnStandbyOnly, RunOnPrimary:
		default:
			bad(f+".run_on", "%q: want prefer-standby, standby-only or primary", clip(t.RunOn))
		}
		switch {
		case t.Timeout < 0:
			bad(f+".timeout", "%s is negative", duration.Format(t.Timeout))
		case t.Timeout > 0 && t.Timeout < time.Second:
			bad(f+".timeout", "%s is less than a second", t.Timeout)
		case t.Timeout > MaxTimeout:
			bad(f+".timeout", "%s is more than %s", duration.Format(t.Timeout), duration.Format(MaxTimeout))
		}
	}
	validateDrill(p.Drill, p, true, bad)
	validateGameDays(p.GameDays, true, bad)
	if !hasFull {
		for i, t := range p.Tiers {
			if t.Type == TypeDiff || t.Type == TypeIncr {
				bad(fmt.Sprintf("tiers[%d].type", i), "%s tier %q needs a full tier to base on, and the policy has none", t.Type, t.Name)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// TierByName returns the named tier.
func (p Policy) TierByName(name string) (Tier, bool) {
	for _, t := range p.Tiers {
		if t.Name == name {
			return t, true
		}
	}
	return Tier{}, false
}

// validName is the coordinators' name alphabet (fsm.ValidName), repeated
// here so that this package imports nothing of the coordinator.
func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
		if !alnum && (i == 0 || ch != '.' && ch != '_' && ch != '-') {
			return false
		}
	}
	return true
}

// clip shortens a value quoted in an error so that a hostile or mistaken
// megabyte does not end up in a message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// CheckBounds is the part of Validate that depends on nothing but the
// values: counts, lengths, names, the enumerations and signs. The FSM
// repeats it when applying, which must give the same answer on every
// coordinator; the schedule and time zone checks (a cron library and a
// zone database, which may differ between binaries or hosts) are the
// proposing server's, before the command is written. Tier names are
// held here to the coordinators' name alphabet only, which is wider than
// Validate's tiername.Valid: a policy the FSM accepted before tier names
// were narrowed must still apply the same when its log is replayed.
func (p Policy) CheckBounds() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if p.PITRWindow < 0 || p.PITRWindow > MaxDuration {
		bad("pitr_window", "%s is out of range", duration.Format(p.PITRWindow))
	}
	if len(p.Tiers) == 0 || len(p.Tiers) > MaxTiers {
		bad("tiers", "%d tiers, want 1 to %d", len(p.Tiers), MaxTiers)
	}
	for _, t := range []struct {
		f string
		d time.Duration
	}{{"targets.rto", p.Targets.RTO}, {"targets.rpo", p.Targets.RPO}, {"targets.failover", p.Targets.Failover}} {
		if t.d < 0 || t.d > compliance.MaxTarget {
			bad(t.f, "%s is out of range", t.d)
		}
	}
	if err := compliance.CheckWriteAvailability(p.Targets.WriteAvailabilityPPM); err != nil {
		errs = append(errs, err)
	}
	names := map[string]bool{}
	for i, t := range p.Tiers {
		f := fmt.Sprintf("tiers[%d]", i)
		if !validName(t.Name) || names[t.Name] {
			bad(f+".name", "%q is invalid or repeated", clip(t.Name))
		}
		names[t.Name] = true
		if t.Type != TypeFull && t.Type != TypeDiff && t.Type != TypeIncr {
			bad(f+".type", "%q: want full, diff or incr", clip(t.Type))
		}
		if t.Schedule == "" || len(t.Schedule) > MaxScheduleLen || len(t.Timezone) > MaxTimezoneLen {
			bad(f+".schedule", "empty, or schedule or timezone too long")
		}
		if t.KeepCount < 0 || t.KeepCount > MaxKeepCount || t.KeepAge < 0 || t.KeepAge > MaxDuration || t.KeepCount == 0 && t.KeepAge == 0 {
			bad(f+".keep_count", "retention out of range")
		}
		if len(t.Repos) > MaxRepos {
			bad(f+".repos", "%d repositories, at most %d", len(t.Repos), MaxRepos)
		}
		for j, r := range t.Repos {
			if !validName(r) || slices.Contains(t.Repos[:j], r) {
				bad(fmt.Sprintf("%s.repos[%d]", f, j), "%q is invalid or repeated", clip(r))
			}
		}
		if t.RunOn != RunOnPreferStandby && t.RunOn != RunOnStandbyOnly && t.RunOn != RunOnPrimary {
			bad(f+".run_on", "%q: want prefer-standby, standby-only or primary", clip(t.RunOn))
		}
		if t.Timeout <= 0 || t.Timeout > MaxTimeout {
			bad(f+".timeout", "%s is out of range", duration.Format(t.Timeout))
		}
	}
	validateDrill(p.Drill, p, false, bad)
	validateGameDays(p.GameDays, false, bad)
	return errors.Join(errs...)
}
