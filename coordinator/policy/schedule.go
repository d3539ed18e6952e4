package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// tzError is a schedule error that is the time zone's fault, so that
// Validate names the timezone field.
type tzError struct{ msg string }

func (e *tzError) Error() string { return e.msg }

func tzErrorf(format string, a ...any) error { return &tzError{msg: fmt.Sprintf(format, a...)} }

// cronParser reads 5 fields (minute first) or 6 (second first) and the
// descriptors (@daily, @every 1h).
func cronParser() cron.Parser {
	return cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// schedule parses the tier's schedule in its time zone. The zone is never
// the host's: an empty one is UTC and "Local" is refused, so that every
// coordinator computes the same slots.
func (t Tier) schedule() (cron.Schedule, error) {
	s := t.Schedule
	switch {
	case s == "":
		return nil, errors.New("required: a cron expression such as \"0 2 * * *\" (5 fields, or 6 with seconds first)")
	case len(s) > MaxScheduleLen:
		return nil, fmt.Errorf("longer than %d bytes", MaxScheduleLen)
	}
	if tz, _, ok := cutTZ(s); ok {
		return nil, fmt.Errorf("%q: its time zone %q differs from timezone %q; give the zone once", clip(s), clip(tz), clip(t.Timezone))
	}
	loc, err := location(t.Timezone)
	if err != nil {
		return nil, err
	}
	sched, err := cronParser().Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", clip(s), err)
	}
	if spec, ok := sched.(*cron.SpecSchedule); ok {
		spec.Location = loc
	}
	return sched, nil
}

// location loads an IANA zone from the compiled-in database.
func location(tz string) (*time.Location, error) {
	switch {
	case tz == "":
		return time.UTC, nil
	case len(tz) > MaxTimezoneLen:
		return nil, tzErrorf("longer than %d bytes", MaxTimezoneLen)
	case strings.EqualFold(tz, "Local"):
		return nil, tzErrorf("%q depends on each host; name the zone (Europe/Berlin, UTC)", tz)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, tzErrorf("unknown time zone %q", clip(tz))
	}
	return loc, nil
}

// gapReference is where maxGap starts measuring: a fixed date, so that the
// answer does not depend on the day a policy is validated.
var gapReference = time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)

// maxGap is the longest time between two consecutive runs of sched over
// about two years from gapReference (DST days included): the "interval"
// a tier's keep_age must cover.
func maxGap(sched cron.Schedule) (time.Duration, error) {
	prev := sched.Next(gapReference)
	if prev.IsZero() {
		return 0, errors.New("never runs (no matching time within five years)")
	}
	first, gap := prev, time.Duration(0)
	for i := 0; i < 3000; i++ {
		next := sched.Next(prev)
		if next.IsZero() {
			break
		}
		gap = max(gap, next.Sub(prev))
		prev = next
		if i > 0 && prev.Sub(first) > 2*366*Day {
			break
		}
	}
	if gap == 0 {
		return 0, errors.New("runs only once")
	}
	return gap, nil
}

// NextRun is the tier's first scheduled time after after.
func (t Tier) NextRun(after time.Time) (time.Time, error) {
	sched, err := t.schedule()
	if err != nil {
		return time.Time{}, fmt.Errorf("tier %s: %w", t.Name, err)
	}
	next := sched.Next(after)
	if next.IsZero() {
		return time.Time{}, fmt.Errorf("tier %s: schedule %q never runs after %s", t.Name, t.Schedule, after.UTC().Format(time.RFC3339))
	}
	return next, nil
}

// MaxCountedMissed caps how many missed slots Due counts: a long outage of
// a second-level schedule must not make the count itself expensive.
const MaxCountedMissed = 1000

// Run is when a tier runs next, as NextRuns and Due see it.
type Run struct {
	Tier string
	Type string
	// At is the tier's first slot after its last run: in the past (or now)
	// when Due.
	At  time.Time
	Due bool
	// Missed is how many slots passed, up to now, since the last run
	// (counted up to MaxCountedMissed): 1 on time, more after an outage.
	// However many, the tier is due once.
	Missed int
}

// NextRuns says, for each tier of p in order, when it runs next given
// last (tier name → when its last run started, as the scheduler records
// it) and now. A tier is due when a slot after its last run is at or
// before now, and it is due once however many slots were missed: after
// one run, recorded at its start (≥ the missed slots), the next slot is
// in the future. A tier without a last run counts from p.UpdatedAt (the
// policy's own time); with neither, it has never run and is due now.
func NextRuns(p Policy, last map[string]time.Time, now time.Time) ([]Run, error) {
	out := make([]Run, 0, len(p.Tiers))
	for _, t := range p.Tiers {
		sched, err := t.schedule()
		if err != nil {
			return nil, fmt.Errorf("tier %s: %w", t.Name, err)
		}
		r := Run{Tier: t.Name, Type: t.Type}
		since, ok := last[t.Name]
		if !ok {
			since = p.UpdatedAt
		}
		if since.IsZero() {
			r.At, r.Due, r.Missed = now, true, 1
			out = append(out, r)
			continue
		}
		r.At = sched.Next(since)
		if r.At.IsZero() {
			return nil, fmt.Errorf("tier %s: schedule %q never runs after %s", t.Name, t.Schedule, since.UTC().Format(time.RFC3339))
		}
		for at := r.At; !at.IsZero() && !at.After(now) && r.Missed < MaxCountedMissed; at = sched.Next(at) {
			r.Missed++
		}
		r.Due = r.Missed > 0
		out = append(out, r)
	}
	return out, nil
}

// Due returns the tiers of p due now (see NextRuns), fulls first, then
// diffs, then incrs, each kind oldest slot first: the scheduler runs one
// backup of a cluster at a time, and a full taken first gives the others
// a base.
func Due(p Policy, last map[string]time.Time, now time.Time) ([]Run, error) {
	runs, err := NextRuns(p, last, now)
	if err != nil {
		return nil, err
	}
	runs = slices.DeleteFunc(runs, func(r Run) bool { return !r.Due })
	rank := map[string]int{TypeFull: 0, TypeDiff: 1, TypeIncr: 2}
	slices.SortStableFunc(runs, func(a, b Run) int {
		if c := rank[a.Type] - rank[b.Type]; c != 0 {
			return c
		}
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.Tier, b.Tier)
	})
	return runs, nil
}

// Bounds of Interval's look-ahead.
const (
	intervalFires  = 400
	intervalMonths = 13
)

// Interval is the longest gap between two consecutive times of the
// schedule (cron expression, in the IANA zone tz, "" = UTC) from from on:
// the schedule's interval, the age a backup of its tier reaches before the
// next is due. It looks ahead over at most 400 times or 13 months (at
// least two times), so its cost is bounded whatever the schedule; DST days
// count as they fall in that window.
func Interval(schedule, tz string, from time.Time) (time.Duration, error) {
	sched, err := Tier{Schedule: schedule, Timezone: tz}.schedule()
	if err != nil {
		return 0, err
	}
	prev := sched.Next(from)
	if prev.IsZero() {
		return 0, fmt.Errorf("%q never runs after %s", clip(schedule), from.UTC().Format(time.RFC3339))
	}
	end := from.AddDate(0, intervalMonths, 0)
	var gap time.Duration
	for i := 0; i < intervalFires; i++ {
		next := sched.Next(prev)
		if next.IsZero() {
			break
		}
		gap = max(gap, next.Sub(prev))
		if next.After(end) {
			break
		}
		prev = next
	}
	if gap == 0 {
		return 0, fmt.Errorf("%q runs only once", clip(schedule))
	}
	return gap, nil
}
