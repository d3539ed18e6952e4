package gameday

import (
	"fmt"
	"time"

	"github.com/pgdr/pgdr/coordinator/drillsched"
)

// Plan is one game day of the policy as Decide reads it.
type Plan struct {
	Name string
	// Next is the schedule's first slot after a time.
	Next func(after time.Time) (time.Time, error)
}

// Record is a recorded game day.
type Record struct {
	ID, Name string
	Slot     time.Time // zero: started by an operator
	Deadline time.Time
	// Runbooks: how many runbooks it runs (as recorded at its start).
	Runbooks int
	// Runs: the runbook runs started, by position.
	Runs []string
	// Measured: the runs whose probe measure is recorded.
	Measured map[string]bool
	// Result: "" while in flight.
	Result string
}

// Run is a runbook run as Decide reads it.
type Run struct {
	// Result: "" while in flight; "done" when it succeeded.
	Result string
	Reason string
}

// Input is what a decision reads, all of it replicated but Now.
type Input struct {
	Now   time.Time
	Plans []Plan
	// Since: when slots start counting for a plan with no recorded slot
	// (the policy's update).
	Since   time.Time
	Records []Record
	// Runs: the cluster's runbook runs by id (a run missing here was
	// compacted away).
	Runs map[string]Run
	// OtherRun: a runbook run of the cluster in flight that belongs to no
	// game day in flight ("" = none; an ended game day's run left running
	// counts): the next runbook waits for it, and no game day starts.
	OtherRun string
}

// Kind is what a decision does.
type Kind string

// Kinds of decision.
const (
	None         Kind = ""
	Start        Kind = "start"
	StartRunbook Kind = "start-runbook"
	Measure      Kind = "measure"
	End          Kind = "end"
)

// Results of a game day.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultTimeout = "timeout"
)

// Decision is what Decide decided.
type Decision struct {
	Kind Kind
	// Start: the plan and slot (Missed: how many slots it covers).
	Name   string
	Slot   time.Time
	Missed int
	// StartRunbook, Measure, End: the game day; Position the runbook's
	// position (StartRunbook); RunID the run measured.
	ID       string
	Position int
	RunID    string
	Result   string
	Reason   string
}

// Decide takes the next decision of a cluster's game days: a game day in
// flight goes first (one at a time per cluster), then a due slot.
func Decide(in Input) (Decision, error) {
	for _, r := range in.Records {
		if r.Result == "" {
			return next(in, r), nil
		}
	}
	for _, p := range in.Plans {
		last := in.Since
		for _, r := range in.Records {
			if r.Name == p.Name && r.Slot.After(last) {
				last = r.Slot
			}
		}
		slot, missed, err := drillsched.DueSlot(p.Next, last, in.Now)
		if err != nil {
			return Decision{}, fmt.Errorf("game day %s: %w", p.Name, err)
		}
		if missed == 0 {
			continue
		}
		if in.OtherRun != "" {
			return Decision{Reason: "game day " + p.Name + " is due: it waits for runbook run " + in.OtherRun + " of the cluster in flight"}, nil
		}
		d := Decision{Kind: Start, Name: p.Name, Slot: slot, Missed: missed,
			Reason: "scheduled slot " + slot.UTC().Format(time.RFC3339)}
		if missed > 1 {
			d.Reason += fmt.Sprintf(" (covering %d missed slots: run once)", missed)
		}
		return d, nil
	}
	return Decision{Reason: "no game day due"}, nil
}

// next is the decision of game day r in flight.
func next(in Input, r Record) Decision {
	d := Decision{ID: r.ID}
	end := func(result, format string, a ...any) Decision {
		d.Kind, d.Result, d.Reason = End, result, fmt.Sprintf(format, a...)
		return d
	}
	// The window bounds what is started and waited for; a run that ended
	// is still measured and judged (its measure is the point of the day).
	timedOut := func() (Decision, bool) {
		if !r.Deadline.IsZero() && !in.Now.Before(r.Deadline) {
			return end(ResultTimeout, "its window ended at %s with %d of %d runbooks started", r.Deadline.UTC().Format(time.RFC3339), len(r.Runs), r.Runbooks), true
		}
		return Decision{}, false
	}
	if k := len(r.Runs); k > 0 {
		id := r.Runs[k-1]
		run, ok := in.Runs[id]
		switch {
		case !ok:
			return end(ResultFailed, "runbook run %s is no longer recorded", id)
		case run.Result == "":
			if t, ok := timedOut(); ok {
				return t
			}
			d.Reason = "runbook run " + id + " in flight"
			return d
		case !r.Measured[id]:
			d.Kind, d.RunID, d.Reason = Measure, id, "runbook run "+id+" ended "+run.Result
			return d
		case run.Result != "done":
			return end(ResultFailed, "runbook run %s ended %s: %s", id, run.Result, run.Reason)
		}
	}
	if len(r.Runs) >= r.Runbooks {
		return end(ResultOK, "%d runbook(s) done", r.Runbooks)
	}
	if t, ok := timedOut(); ok {
		return t
	}
	if in.OtherRun != "" {
		d.Reason = "runbook run " + in.OtherRun + " of the cluster is in flight: the next runbook waits"
		return d
	}
	d.Kind, d.Position = StartRunbook, len(r.Runs)
	d.Reason = fmt.Sprintf("runbook %d of %d", d.Position+1, r.Runbooks)
	return d
}
