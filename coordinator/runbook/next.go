package runbook

import (
	"fmt"
	"time"
)

// Kind is what a decision says to do.
type Kind string

// Kinds of a Decision. The caller records every kind but KindWait and
// KindEnded with Apply; KindStart and KindRollback also mean: send the
// action (Body, resolved; Target for a switchover; a pause's reason is
// Body.Message), then Record its outcome — except for a wait, which sends
// nothing: Next reads its condition from the view.
const (
	// KindStart: send the step's action.
	KindStart Kind = "start"
	// KindValidate: the action succeeded; check the step's validation.
	KindValidate Kind = "validate"
	// KindWait: nothing to do before Until (zero: decide again on the
	// next view; a step not yet started waits while another switchover,
	// backup or drill of the cluster is in flight).
	KindWait     Kind = "wait"
	KindStepDone Kind = "step_done"
	// KindStepFailed: the step failed; the run rolls back.
	KindStepFailed Kind = "step_failed"
	// KindRollback: send the rollback of a completed step.
	KindRollback     Kind = "rollback"
	KindRollbackDone Kind = "rollback_done"
	// KindRollbackFail: the rollback failed; the run ends failed.
	KindRollbackFail  Kind = "rollback_failed"
	KindRunDone       Kind = "run_done"
	KindRunRolledBack Kind = "run_rolled_back"
	KindRunFailed     Kind = "run_failed"
	// KindEnded: the run has ended; nothing to do.
	KindEnded Kind = "ended"
)

// Default timeouts, when a step does not set one.
var defaultTimeout = map[Action]time.Duration{
	ActionPause: time.Minute, ActionResume: time.Minute, ActionNotify: time.Minute,
	ActionSwitchover: 10 * time.Minute, ActionWait: 5 * time.Minute, ActionCommand: 10 * time.Minute,
	ActionBackup: 6 * time.Hour, ActionDrill: 6 * time.Hour,
}

// DefaultValidateTimeout bounds a validation that sets no timeout.
const DefaultValidateTimeout = 2 * time.Minute

// Decision is what Next decided.
type Decision struct {
	Kind Kind
	// Step: the step it is about (its id).
	Step string
	// Rollback: it is about the step's rollback.
	Rollback bool
	// Body: the action to send (parameters substituted).
	Body Body
	// Target: a switchover's target node; Previous: the primary now.
	Target, Previous string
	// Reissue: an idempotent action (pause, resume, notify) sent under an
	// older leadership whose outcome was not recorded is sent again; a
	// command is asked about again (report only).
	Reissue bool
	// Applied: the step changed the cluster (its rollback runs).
	Applied bool
	// Leader: the leadership sending the action (View.Leader).
	Leader string
	// Until: a wait's deadline.
	Until time.Time
	// Key: "run/step" or "run/step/rollback", for receivers and agents to
	// drop a duplicate of a re-sent action.
	Key    string
	Reason string
}

// Next decides the next move of a run from its record and a view of the
// cluster: rb is the runbook the run started with (unresolved; Next
// substitutes run.Params). Steps run one at a time in the executed order
// (after dependencies, then declaration order); a step that fails (its
// action failed, its wait or validation timed out) makes the run roll
// back: the rollbacks of the steps that changed the cluster (Applied) run
// in reverse order, the failed step's own first when its action had
// taken effect, and a step without a rollback is skipped. A failed
// rollback ends the run failed. Next has no side effects.
func Next(rb Runbook, run RunState, v View, now time.Time) Decision {
	if run.Result != "" {
		return Decision{Kind: KindEnded, Reason: fmt.Sprintf("run %s ended %s", run.ID, run.Result)}
	}
	r, ord, err := prepare(rb, run)
	if err != nil {
		return Decision{Kind: KindRunFailed, Reason: err.Error()}
	}
	if run.RollingBack {
		return nextRollback(r, run, ord, v, now)
	}
	for _, i := range ord {
		c := cursor{rb: r, run: run, i: i, v: v, now: now}
		switch run.Steps[i].Status {
		case StatusDone:
			continue
		case StatusPending:
			return c.begin()
		case StatusRunning:
			return c.running()
		case StatusValidating:
			return c.validating()
		default: // failed, not yet rolling back: fail it again
			return c.fail(run.Steps[i].Applied, run.Steps[i].Reason)
		}
	}
	return Decision{Kind: KindRunDone, Reason: fmt.Sprintf("all %d steps done", len(ord))}
}

// prepare resolves the runbook and checks that the run belongs to it.
func prepare(rb Runbook, run RunState) (Runbook, []int, error) {
	r, err := Resolve(rb, run.Params)
	if err != nil {
		return Runbook{}, nil, err
	}
	if len(run.Steps) != len(r.Steps) {
		return Runbook{}, nil, fmt.Errorf("run %s records %d steps, runbook %s has %d", run.ID, len(run.Steps), r.Name, len(r.Steps))
	}
	ids := map[string]int{}
	for i, s := range r.Steps {
		if run.Steps[i].ID != s.ID {
			return Runbook{}, nil, fmt.Errorf("run %s step %d is %q, runbook %s says %q", run.ID, i, run.Steps[i].ID, r.Name, s.ID)
		}
		ids[s.ID] = i
	}
	ord, _ := order(r.Steps, ids) // Resolve refused a cycle
	return r, ord, nil
}

// nextRollback walks the steps in reverse executed order for the next
// rollback to run.
func nextRollback(r Runbook, run RunState, ord []int, v View, now time.Time) Decision {
	for k := len(ord) - 1; k >= 0; k-- {
		i := ord[k]
		s := run.Steps[i]
		if !s.Applied || r.Steps[i].Rollback == nil {
			continue
		}
		c := cursor{rb: r, run: run, i: i, v: v, now: now, rollback: true}
		switch s.RollbackStatus {
		case StatusDone:
			continue
		case StatusFailed:
			return Decision{Kind: KindRunFailed, Reason: fmt.Sprintf("%s; then the rollback of step %s failed: %s; the steps before it are not rolled back", run.Reason, s.ID, s.Reason)}
		case StatusRunning:
			return c.running()
		default:
			return c.begin()
		}
	}
	return Decision{Kind: KindRunRolledBack, Reason: run.Reason + "; the completed steps were rolled back"}
}

// cursor is one step (or its rollback) being decided.
type cursor struct {
	rb       Runbook
	run      RunState
	i        int
	v        View
	now      time.Time
	rollback bool
}

func (c cursor) step() Step       { return c.rb.Steps[c.i] }
func (c cursor) state() StepState { return c.run.Steps[c.i] }

func (c cursor) body() Body {
	if c.rollback {
		return *c.step().Rollback
	}
	return c.step().Body
}

func (c cursor) exec() Exec {
	if c.rollback {
		return c.state().RollbackExec
	}
	return c.state().Exec
}

func (c cursor) decision(k Kind, reason string) Decision {
	key := c.run.ID + "/" + c.step().ID
	if c.rollback {
		key += "/rollback"
	}
	return Decision{Kind: k, Step: c.step().ID, Rollback: c.rollback, Key: key, Reason: reason, Leader: c.v.Leader}
}

// ok: the action (or rollback) succeeded; applied says it changed the
// cluster. A step with a validation goes on to it.
func (c cursor) ok(applied bool, reason string) Decision {
	k := KindStepDone
	switch {
	case c.rollback:
		k = KindRollbackDone
	case c.step().Validate != nil:
		k = KindValidate
	}
	d := c.decision(k, reason)
	d.Applied = applied
	return d
}

func (c cursor) fail(applied bool, reason string) Decision {
	k := KindStepFailed
	if c.rollback {
		k = KindRollbackFail
	}
	d := c.decision(k, reason)
	d.Applied = applied
	return d
}

func (c cursor) send(reissue bool, target, reason string) Decision {
	k := KindStart
	if c.rollback {
		k = KindRollback
	}
	d := c.decision(k, reason)
	d.Body, d.Target, d.Previous, d.Reissue = c.body(), target, c.v.Primary, reissue
	return d
}

func (c cursor) wait(until time.Time, reason string) Decision {
	d := c.decision(KindWait, reason)
	d.Until = until
	return d
}

func (c cursor) timeout() time.Duration { return ActionTimeout(c.body()) }

// settlingWhy: a new leader's view of the members is still filling, so
// nothing is judged on it (a condition neither holds nor fails on it).
const settlingWhy = "the leader's view of the members is still filling after a leadership change"

// begin decides a pending step (or a rollback not yet sent): an action
// whose effect is already there is done without being sent (and without
// Applied, so no rollback undoes what the run did not do).
func (c cursor) begin() Decision {
	b := c.body()
	if c.v.Settling && (b.Action == ActionSwitchover || b.Action == ActionBackup || b.Action == ActionDrill || b.Action == ActionWait) {
		return c.wait(time.Time{}, settlingWhy)
	}
	switch b.Action {
	case ActionPause:
		if c.v.Paused {
			return c.ok(false, "failover already paused: nothing to do")
		}
	case ActionResume:
		if !c.v.Paused {
			return c.ok(false, "failover not paused: nothing to do")
		}
	case ActionSwitchover:
		if c.v.SwitchoverInFlight {
			return c.wait(time.Time{}, "another switchover of the cluster is in flight")
		}
		node, noop, err := target(b, c.v, c.state().Previous)
		switch {
		case err != nil && c.rollback && !c.run.RollbackSince.IsZero() && c.now.Before(c.run.RollbackSince.Add(c.timeout())):
			// The node to switch back to may still be rejoining after
			// the step's own switchover: wait for it, up to the timeout.
			return c.wait(c.run.RollbackSince.Add(c.timeout()), "waiting for the rollback's switchover target: "+err.Error())
		case err != nil && !c.rollback && !c.run.LastChange.IsZero() && c.now.Before(c.run.LastChange.Add(c.timeout())):
			// A target may be unusable for a moment (a replica refusing
			// promotion just after a failsafe acknowledgement, one
			// reconnecting): wait for one, up to the step's timeout.
			return c.wait(c.run.LastChange.Add(c.timeout()), "waiting for a switchover target: "+err.Error())
		case err != nil:
			return c.fail(false, err.Error())
		case noop:
			return c.ok(false, fmt.Sprintf("the primary %s already is where the switchover wants it: nothing to do", node))
		}
		return c.send(false, node, fmt.Sprintf("switch over from %s to %s", orNone(c.v.Primary), node))
	case ActionWait:
		if ok, why := met(b.Check, c.v); ok {
			return c.ok(false, string(b.Condition)+" met: "+why)
		}
	case ActionBackup:
		if c.v.BackupInFlight {
			return c.wait(time.Time{}, "another backup of the cluster is in flight")
		}
	case ActionDrill:
		if c.v.DrillInFlight {
			return c.wait(time.Time{}, "another restore drill of the cluster is in flight")
		}
	}
	return c.send(false, "", string(b.Action))
}

// running decides an action sent (or a wait begun): a wait is judged from
// the view until its deadline; another action awaits its outcome from the
// leadership that sent it until its timeout, and is judged from the view
// once that leadership is gone or the timeout passed.
func (c cursor) running() Decision {
	b, e := c.body(), c.exec()
	deadline := e.Started.Add(c.timeout())
	if b.Action == ActionWait {
		if c.v.Settling {
			return c.wait(time.Time{}, settlingWhy)
		}
		ok, why := met(b.Check, c.v)
		switch {
		case ok:
			return c.ok(false, string(b.Condition)+" met: "+why)
		case !c.now.Before(deadline):
			return c.fail(false, fmt.Sprintf("%s not met within %s: %s", b.Condition, c.timeout(), why))
		}
		return c.wait(deadline, string(b.Condition)+" not met yet: "+why)
	}
	ours := e.Leader == c.v.Leader
	if ours && c.now.Before(deadline) {
		if d, done := c.jobOutcome(b, e); done {
			return d
		}
		return c.wait(deadline, fmt.Sprintf("%s sent at %s: awaiting its outcome", b.Action, e.Started.UTC().Format(time.RFC3339)))
	}
	return c.judge(b, e, !ours)
}

// jobOutcome: a backup or drill step ends with its run.
func (c cursor) jobOutcome(b Body, e Exec) (Decision, bool) {
	if b.Action != ActionBackup && b.Action != ActionDrill {
		return Decision{}, false
	}
	j, found := c.job(b, e)
	if !found || j.Result == "" {
		return Decision{}, false
	}
	if j.Result == "ok" {
		return c.ok(true, fmt.Sprintf("%s %s ended ok", b.Action, j.ID)), true
	}
	return c.fail(false, fmt.Sprintf("%s %s ended %s", b.Action, j.ID, j.Result)), true
}

// job finds the backup or drill run an action started: by its Ref, else
// the first of its kind (and tier) started at or after it was sent.
func (c cursor) job(b Body, e Exec) (Job, bool) {
	for _, j := range c.v.Jobs {
		if e.Ref != "" {
			if j.ID == e.Ref {
				return j, true
			}
			continue
		}
		if j.Kind == string(b.Action) && (b.Action != ActionBackup || j.Tier == b.Tier) && !j.Started.Before(e.Started) {
			return j, true
		}
	}
	return Job{}, false
}

// judge decides an action whose outcome will not be reported (the
// leadership that sent it is gone: handover is true; or its timeout
// passed), from the view. The rule of each action:
//
//   - pause, resume: idempotent. The effect there (paused, not paused) is
//     done; else, after a leader change, it is sent again; after a timeout
//     under the same leader, the step fails.
//   - notify: sent again after a leader change (receivers drop a repeat
//     by Key: delivery is at least once, like the notifiers' retries);
//     fails after a timeout.
//   - switchover: never sent twice. The target is the primary: done. A
//     switchover in flight (the server's resume completes it): wait, up to
//     twice its timeout. The primary is still the one before: it did not
//     happen, the step fails (nothing to roll back). Another primary: the
//     step fails, Applied, so its rollback switches back.
//   - backup, drill: never sent twice. Judged by the run they started
//     (Job by Ref, else by kind and start time): ok is done, failed fails
//     the step, in flight waits; none found fails the step.
//   - command: never started twice. After a leader change the agent is
//     asked again, report only (agent/runcmd answers a key it has with
//     the run's progress or result, one it does not have with a refusal
//     that starts nothing): failing the step at once ran its rollback
//     beside the command still running on the agent, and dropped the
//     result the agent holds. After a timeout the step fails, Applied
//     (it may have run), so its rollback runs.
//   - wait: not judged; running re-reads the condition with its deadline.
func (c cursor) judge(b Body, e Exec, handover bool) Decision {
	why := "timed out"
	if handover {
		why = "sent under another leadership (" + orNone(e.Leader) + ")"
	}
	switch b.Action {
	case ActionPause, ActionResume:
		if c.v.Paused == (b.Action == ActionPause) {
			// A pause in effect that someone else made (an operator,
			// meanwhile) is not the run's to undo on a rollback.
			applied := b.Action == ActionResume || c.v.pausedByRun(c.run.ID)
			return c.ok(applied, fmt.Sprintf("%s: failover paused=%t (by %s): done", why, c.v.Paused, orNone(c.v.PausedBy)))
		}
		if handover {
			return c.send(true, "", fmt.Sprintf("%s: not in effect, sent again (idempotent)", why))
		}
		return c.fail(false, fmt.Sprintf("%s %s: failover paused=%t", b.Action, why, c.v.Paused))
	case ActionNotify:
		if handover {
			return c.send(true, "", why+": sent again (receivers drop a repeat by key)")
		}
		return c.fail(false, "notify "+why)
	case ActionSwitchover:
		return c.judgeSwitchover(e, why)
	case ActionBackup, ActionDrill:
		return c.judgeJob(b, e, why)
	case ActionCommand:
		if handover {
			return c.send(true, "", why+": the agent is asked again (report only: never started twice)")
		}
	}
	return c.fail(true, fmt.Sprintf("%s %s: its effect cannot be seen, so it is not run again; its rollback runs", b.Action, why))
}

func (c cursor) judgeSwitchover(e Exec, why string) Decision {
	prev := c.state().Previous
	switch {
	case c.v.Primary == e.Target:
		return c.ok(true, fmt.Sprintf("%s: %s is the primary: done", why, e.Target))
	case c.v.SwitchoverInFlight && c.now.Before(e.Started.Add(2*c.timeout())):
		return c.wait(e.Started.Add(2*c.timeout()), why+": a switchover is in flight; awaiting it")
	case c.v.Primary == prev && !c.rollback:
		return c.fail(false, fmt.Sprintf("%s: the primary is still %s, not %s: not sent again", why, prev, e.Target))
	}
	return c.fail(true, fmt.Sprintf("%s: the primary is %s, not %s: not sent again", why, orNone(c.v.Primary), e.Target))
}

func (c cursor) judgeJob(b Body, e Exec, why string) Decision {
	j, found := c.job(b, e)
	switch {
	case !found:
		return c.fail(false, fmt.Sprintf("%s: no %s run found: not started again", why, b.Action))
	case j.Result == "":
		return c.wait(time.Time{}, fmt.Sprintf("%s: %s %s is in flight", why, b.Action, j.ID))
	case j.Result == "ok":
		return c.ok(true, fmt.Sprintf("%s: %s %s ended ok", why, b.Action, j.ID))
	}
	return c.fail(false, fmt.Sprintf("%s: %s %s ended %s", why, b.Action, j.ID, j.Result))
}

// validating checks a step's validation until its deadline.
func (c cursor) validating() Decision {
	val := *c.step().Validate
	limit := DefaultValidateTimeout
	if d, err := parseTimeout(val.Timeout); err == nil {
		limit = d
	}
	if c.v.Settling {
		return c.wait(time.Time{}, settlingWhy)
	}
	deadline := c.state().ValidateStarted.Add(limit)
	ok, why := met(val, c.v)
	applied := c.state().Applied
	switch {
	case ok:
		d := c.decision(KindStepDone, "validated: "+string(val.Condition)+": "+why)
		d.Applied = applied
		return d
	case !c.now.Before(deadline):
		return c.fail(applied, fmt.Sprintf("validation %s failed within %s: %s", val.Condition, limit, why))
	}
	return c.wait(deadline, "validating "+string(val.Condition)+": "+why)
}

// ActionTimeout is how long an action of b may take (its timeout, else
// its action's default): a caller carrying it out bounds its own wait by
// it, as Next judges the step past it.
func ActionTimeout(b Body) time.Duration {
	if d, err := parseTimeout(b.Timeout); err == nil {
		return d
	}
	return defaultTimeout[b.Action]
}
