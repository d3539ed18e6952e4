package runbook

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// Status is where a step is.
type Status string

// Statuses of a step.
const (
	StatusPending Status = "pending"
	// StatusRunning: the action was sent (a wait: the wait began).
	StatusRunning Status = "running"
	// StatusValidating: the action succeeded; its validation is checked.
	StatusValidating Status = "validating"
	StatusDone       Status = "done"
	StatusFailed     Status = "failed"
	// StatusRolledBack: its rollback ran.
	StatusRolledBack Status = "rolled_back"
)

// Result is how a run ended ("" while it runs).
type Result string

// Results of a run.
const (
	ResultDone Result = "done"
	// ResultRolledBack: a step failed and the completed steps were rolled
	// back.
	ResultRolledBack Result = "rolled_back"
	// ResultFailed: a rollback failed too (or the run could not go on);
	// Reason says what is left as it is.
	ResultFailed Result = "failed"
)

// Exec is the record of one sent action: a step's or its rollback's.
type Exec struct {
	// Started: when it was sent (a wait: when it began).
	Started time.Time
	// Leader: the leadership that sent it (View.Leader).
	Leader string
	// Target: a switchover's target node.
	Target string
	// Ref: the backup or drill run it started, once known (WithRef).
	Ref string
}

// StepState is the replicated record of one step of a run.
type StepState struct {
	ID     string
	Status Status
	Exec   Exec
	// Previous: the primary when the step started (for to_previous).
	Previous string
	// ValidateStarted: when its validation began.
	ValidateStarted time.Time
	// Applied: the step changed the cluster, so its rollback runs when
	// the run rolls back. A step whose action found nothing to do (pause
	// of a paused cluster) is done without Applied.
	Applied bool
	// RollbackStatus: "" (not run), running, done or failed.
	RollbackStatus Status
	RollbackExec   Exec
	// Reason: the last outcome, in words.
	Reason string
}

// RunState is the replicated record of a run of a runbook. Steps holds one
// entry per runbook step, in declaration order.
type RunState struct {
	ID      string
	Runbook string
	Params  map[string]string
	Steps   []StepState
	// RollingBack: a step failed; the completed steps roll back.
	RollingBack bool
	// RollbackSince: when the run began rolling back (a rollback's
	// switchover waits for its target from then, up to its timeout).
	RollbackSince time.Time
	// LastChange: when a decision was last recorded (a switchover not yet
	// sent waits for its target from then, up to its timeout: a replica
	// may be briefly unusable, e.g. refusing promotion for a moment after
	// acknowledging a failsafe ping).
	LastChange time.Time
	// Reason: why it rolls back, or how it ended.
	Reason  string
	Result  Result
	Started time.Time
	Ended   time.Time
}

// ErrStale: a transition that does not fit the run as recorded (a late
// outcome of a step already judged, a decision taken on an older state).
// It changes nothing.
var ErrStale = errors.New("stale runbook transition")

// NewRun is the record of a run about to start: the parameters are
// resolved against rb (a refusal names the field) and every step is
// pending. Nothing of the run exists until the caller records it.
func NewRun(rb Runbook, id string, params map[string]string, now time.Time) (RunState, error) {
	if _, err := Resolve(rb, params); err != nil {
		return RunState{}, err
	}
	if id == "" || len(id) > MaxName {
		return RunState{}, fmt.Errorf("%w: run id %q: want 1 to %d bytes", ErrInvalid, clip(id), MaxName)
	}
	run := RunState{ID: id, Runbook: rb.Name, Params: maps.Clone(params), Started: now}
	for _, s := range rb.Steps {
		run.Steps = append(run.Steps, StepState{ID: s.ID, Status: StatusPending})
	}
	return run, nil
}

// clone copies a run so that a transition leaves its input unchanged.
func (r RunState) clone() RunState {
	r.Steps = slices.Clone(r.Steps)
	r.Params = maps.Clone(r.Params)
	return r
}

func (r RunState) index(id string) int {
	return slices.IndexFunc(r.Steps, func(s StepState) bool { return s.ID == id })
}

// Apply records a decision of Next in the run: the caller proposes the
// result through Raft before carrying the decision out (intent first).
// A decision that does not fit the run is ErrStale and changes nothing.
func Apply(run RunState, d Decision, now time.Time) (RunState, error) {
	out := run.clone()
	if out.Result != "" {
		return run, fmt.Errorf("%w: run %s ended %s", ErrStale, run.ID, run.Result)
	}
	switch d.Kind {
	case KindWait, KindEnded:
		return run, nil
	case KindRunDone, KindRunRolledBack, KindRunFailed:
		out.Result = map[Kind]Result{KindRunDone: ResultDone, KindRunRolledBack: ResultRolledBack, KindRunFailed: ResultFailed}[d.Kind]
		out.Reason, out.Ended = clipText(d.Reason), now
		return out, nil
	}
	i := out.index(d.Step)
	if i < 0 {
		return run, fmt.Errorf("%w: run %s has no step %q", ErrStale, run.ID, d.Step)
	}
	if err := applyStep(&out, &out.Steps[i], d, now); err != nil {
		return run, fmt.Errorf("%w: run %s step %s: %s", ErrStale, run.ID, d.Step, err)
	}
	out.LastChange = now
	return out, nil
}

func applyStep(run *RunState, s *StepState, d Decision, now time.Time) error {
	if err := fits(run, s, d); err != nil {
		return err
	}
	s.Reason = clipText(d.Reason)
	switch d.Kind {
	case KindStart:
		if !d.Reissue {
			s.Previous = d.Previous
		}
		s.Status = StatusRunning
		s.Exec = Exec{Started: now, Leader: d.Leader, Target: d.Target}
	case KindValidate:
		s.Status, s.ValidateStarted, s.Applied = StatusValidating, now, s.Applied || d.Applied
	case KindStepDone:
		s.Status, s.Applied = StatusDone, s.Applied || d.Applied
	case KindStepFailed:
		s.Status, s.Applied = StatusFailed, s.Applied || d.Applied
		run.RollingBack, run.Reason = true, clipText(fmt.Sprintf("step %s failed: %s", s.ID, d.Reason))
		if run.RollbackSince.IsZero() {
			run.RollbackSince = now
		}
	case KindRollback:
		s.RollbackStatus = StatusRunning
		s.RollbackExec = Exec{Started: now, Leader: d.Leader, Target: d.Target}
	case KindRollbackDone:
		s.RollbackStatus, s.Status = StatusDone, StatusRolledBack
	case KindRollbackFail:
		s.RollbackStatus = StatusFailed
	}
	return nil
}

// fits says whether a decision applies to a step as recorded.
func fits(run *RunState, s *StepState, d Decision) error {
	forward := map[Kind][]Status{
		KindStart:      {StatusPending},
		KindValidate:   {StatusPending, StatusRunning},
		KindStepDone:   {StatusPending, StatusRunning, StatusValidating},
		KindStepFailed: {StatusPending, StatusRunning, StatusValidating},
	}
	back := map[Kind][]Status{
		KindRollback:     {""},
		KindRollbackDone: {"", StatusRunning},
		KindRollbackFail: {"", StatusRunning},
	}
	if d.Reissue {
		forward[KindStart], back[KindRollback] = []Status{StatusRunning}, []Status{StatusRunning}
	}
	if ok, has := forward[d.Kind]; has {
		switch {
		case run.RollingBack:
			return fmt.Errorf("%s does not apply: the run is rolling back", d.Kind)
		case !slices.Contains(ok, s.Status):
			return fmt.Errorf("%s does not apply to a step %s", d.Kind, s.Status)
		}
		return nil
	}
	if ok, has := back[d.Kind]; has {
		switch {
		case !run.RollingBack:
			return fmt.Errorf("%s does not apply: the run is not rolling back", d.Kind)
		case !s.Applied:
			return fmt.Errorf("%s does not apply: the step changed nothing", d.Kind)
		case !slices.Contains(ok, s.RollbackStatus):
			return fmt.Errorf("%s does not apply to a rollback %q", d.Kind, s.RollbackStatus)
		}
		return nil
	}
	return fmt.Errorf("unknown decision %q", d.Kind)
}

// Outcome is what became of an action the caller sent.
type Outcome struct {
	OK bool
	// Applied (when !OK): the failed action may have changed the cluster
	// (a switchover that recorded its target before failing), so its
	// rollback runs.
	Applied bool
	Message string
	// Ref: the backup or drill run it started, if any.
	Ref string
	// Unchanged (when OK): the action found its effect already there
	// (a pause of a cluster someone else paused meanwhile): the step is
	// done without Applied, and its rollback does not run.
	Unchanged bool
}

// Record records the outcome of the action of a step (rollback false) or
// of its rollback. The step must be running it under any leadership; an
// outcome that comes after Next judged the step is ErrStale and changes
// nothing. A succeeded action moves its step to validating (when it has a
// validation) or done; a failed one fails the step, and the run rolls
// back; a failed rollback is recorded, and Next ends the run failed.
func Record(rb Runbook, run RunState, step string, rollback bool, o Outcome, now time.Time) (RunState, error) {
	i := run.index(step)
	if i < 0 || i >= len(rb.Steps) || rb.Steps[i].ID != step {
		return run, fmt.Errorf("%w: run %s has no step %q", ErrStale, run.ID, step)
	}
	s := run.Steps[i]
	d := Decision{Step: step, Rollback: rollback, Reason: o.Message}
	switch {
	case rollback && s.RollbackStatus != StatusRunning, !rollback && s.Status != StatusRunning:
		return run, fmt.Errorf("%w: run %s step %s is not running its %s", ErrStale, run.ID, step, what(rollback))
	case rollback && o.OK:
		d.Kind = KindRollbackDone
	case rollback:
		d.Kind = KindRollbackFail
	case o.OK && rb.Steps[i].Validate != nil:
		d.Kind, d.Applied = KindValidate, !o.Unchanged
	case o.OK:
		d.Kind, d.Applied = KindStepDone, !o.Unchanged
	default:
		d.Kind, d.Applied = KindStepFailed, o.Applied
	}
	out, err := Apply(run, d, now)
	if err == nil && o.Ref != "" {
		out.Steps[i].setRef(rollback, o.Ref)
	}
	return out, err
}

// WithRef records the backup or drill run a step's action (or its
// rollback's) started, before it ends, so that a new leader judges the
// step by that run.
func WithRef(run RunState, step string, rollback bool, ref string) (RunState, error) {
	i := run.index(step)
	if i < 0 || len(ref) > MaxName {
		return run, fmt.Errorf("%w: run %s step %q ref %q", ErrStale, run.ID, step, clip(ref))
	}
	out := run.clone()
	out.Steps[i].setRef(rollback, ref)
	return out, nil
}

func (s *StepState) setRef(rollback bool, ref string) {
	if rollback {
		s.RollbackExec.Ref = ref
	} else {
		s.Exec.Ref = ref
	}
}

// clipText bounds a reason kept in the replicated run, on a character
// boundary (the record may be protobuf, whose strings are UTF-8).
func clipText(s string) string {
	if len(s) <= MaxText {
		return s
	}
	n := MaxText - 3
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func what(rollback bool) string {
	if rollback {
		return "rollback"
	}
	return "action"
}
