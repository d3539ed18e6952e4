package runbook

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrPrecondition wraps the problems DryRun finds in the cluster.
var ErrPrecondition = errors.New("runbook preconditions not met")

// Plan is a run as DryRun foresees it: printable lines, in executed order.
type Plan struct {
	Runbook string
	Cluster string
	Lines   []string
}

// String is the plan, one line each.
func (p Plan) String() string { return strings.Join(p.Lines, "\n") }

// DryRun resolves the parameters and checks every precondition it can
// from the view, stepping through the runbook on a copy of the view (a
// switchover moves the primary in the copy; pause and resume flip it):
// nothing else runs on the cluster, each switchover has a healthy replica
// to go to, the regions and nodes named exist, a backup's tier is in the
// policy, and a validation would pass where the view can tell. It returns
// the ordered plan and, when something is wrong, an error (wrapping
// ErrInvalid or ErrPrecondition) naming each problem's field. It changes
// nothing.
func DryRun(rb Runbook, params map[string]string, v View) (Plan, error) {
	plan := Plan{Runbook: rb.Name, Cluster: v.Cluster}
	r, err := Resolve(rb, params)
	if err != nil {
		return plan, err
	}
	ids := map[string]int{}
	for i, s := range r.Steps {
		ids[s.ID] = i
	}
	ord, _ := order(r.Steps, ids)
	sim := v
	sim.Members = slices.Clone(v.Members)
	var errs []error
	if b := v.busy(); b != "" {
		errs = append(errs, fmt.Errorf("cluster %s: %s is in flight: one operation at a time", v.Cluster, b))
	}
	plan.Lines = append(plan.Lines, fmt.Sprintf("runbook %s on cluster %s (primary %s in region %s, failover paused=%t):",
		r.Name, orNone(v.Cluster), orNone(v.Primary), orNone(v.primaryRegion()), v.Paused))
	for n, i := range ord {
		s := r.Steps[i]
		path := fmt.Sprintf("steps[%d]", i)
		line, problems := foresee(&sim, path, s.Body, "")
		plan.Lines = append(plan.Lines, fmt.Sprintf("%2d. %s: %s", n+1, s.ID, line))
		errs = append(errs, problems...)
		if s.Validate != nil {
			line, problems := foreseeCheck(sim, path+".validate", *s.Validate, true)
			plan.Lines = append(plan.Lines, "    validate: "+line)
			errs = append(errs, problems...)
		}
		if s.Rollback != nil {
			plan.Lines = append(plan.Lines, "    rollback (if the run rolls back): "+describe(*s.Rollback))
		}
	}
	if len(errs) > 0 {
		return plan, fmt.Errorf("%w: %w", ErrPrecondition, errors.Join(errs...))
	}
	return plan, nil
}

// foresee describes one action on the simulated view, checks what it can
// and applies the action's effect to the copy.
func foresee(sim *View, path string, b Body, prev string) (string, []error) {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", path, field, fmt.Sprintf(format, a...)))
	}
	switch b.Action {
	case ActionPause:
		if sim.Paused {
			return "pause automatic failover: already paused, nothing to do (its rollback will not run)", nil
		}
		sim.Paused = true
		return "pause automatic failover", nil
	case ActionResume:
		if !sim.Paused {
			return "resume automatic failover: not paused, nothing to do", nil
		}
		sim.Paused = false
		return "resume automatic failover", nil
	case ActionSwitchover:
		return foreseeSwitchover(sim, path, b, prev)
	case ActionWait:
		line, errs := foreseeCheck(*sim, path, b.Check, false)
		if assume(sim, b.Check) {
			if ok, why := met(b.Check, *sim); !ok && (b.Condition == CondHealthyReplicas || b.Condition == CondLagUnder) {
				// Even with every member it counts back as a caught-up
				// replica the condition fails: the wait could only time
				// out (after the steps before it ran).
				return line, append(errs, fmt.Errorf("%s: %s can never hold: %s has %d members that could be replicas, want %s (%s)",
					path, b.Condition, where(b.Check), candidates(*sim, b.Check), orDefault(b.Count, "1"), why))
			}
			line += " (assumed met for the steps after it: the wait fails the run if it is not)"
		}
		return line, errs
	case ActionBackup:
		if len(sim.Tiers) > 0 && !slices.Contains(sim.Tiers, b.Tier) {
			bad(".tier", "%q is not a tier of the policy (%s)", b.Tier, strings.Join(sim.Tiers, ", "))
		}
		return "back up tier " + b.Tier, errs
	case ActionDrill:
		switch {
		case b.Node != "":
			if err := replicaOK(*sim, b.Node, "node"); err != nil {
				errs = append(errs, fmt.Errorf("%s.%w", path, err))
			}
		case len(sim.replicas("", "")) == 0:
			bad("", "no healthy replica to run a restore drill on")
		}
		return "restore drill on " + orDefault(b.Node, "the drill scheduler's choice"), errs
	case ActionCommand:
		if _, ok := sim.member(b.Node); !ok {
			bad(".node", "%q is not a member of cluster %s", b.Node, sim.Cluster)
		}
		return fmt.Sprintf("run on %s: %s", b.Node, b.Run), errs
	case ActionNotify:
		return "notify: " + b.Message, nil
	}
	return string(b.Action), nil
}

func foreseeSwitchover(sim *View, path string, b Body, prev string) (string, []error) {
	if sim.Primary == "" {
		return describe(b), []error{fmt.Errorf("%s: cluster %s has no primary recorded: nothing to switch over from", path, sim.Cluster)}
	}
	if p, _ := sim.member(sim.Primary); !p.Healthy {
		return describe(b), []error{fmt.Errorf("%s: the primary %s is not healthy: a switchover stops a working primary (use failover)", path, sim.Primary)}
	}
	node, noop, err := target(b, *sim, prev)
	switch {
	case err != nil:
		return describe(b), []error{fmt.Errorf("%s.%w", path, err)}
	case noop:
		return describe(b) + fmt.Sprintf(": the primary %s already is there, nothing to do", node), nil
	}
	old := sim.Primary
	for k, m := range sim.Members {
		switch m.Name {
		case old:
			sim.Members[k].Role, sim.Members[k].LagBytes = RoleReplica, 0
		case node:
			sim.Members[k].Role = RolePrimary
		}
	}
	sim.Primary = node
	return fmt.Sprintf("%s: from %s to %s (region %s), no acknowledged commit lost", describe(b), old, node, orNone(sim.primaryRegion())), nil
}

// assume applies to the simulated view what a wait for c establishes
// when it holds (a wait exists to let the cluster get there, e.g. a
// region's replicas coming back after an outage): every member of the
// condition's region filter but the primary counts as a healthy replica
// with no lag. It reports whether the condition did not hold before.
func assume(sim *View, c Check) bool {
	if ok, _ := met(c, *sim); ok {
		return false
	}
	if c.Condition != CondHealthyReplicas && c.Condition != CondLagUnder {
		return true
	}
	for k, m := range sim.Members {
		if !counted(*sim, c, m) {
			continue
		}
		sim.Members[k].Role, sim.Members[k].Healthy, sim.Members[k].LagBytes, sim.Members[k].NoTarget = RoleReplica, true, 0, ""
	}
	return true
}

// where names a condition's region filter in words.
func where(c Check) string {
	switch {
	case c.Region != "":
		return "region " + c.Region
	case c.OutsideRegion != "":
		return "outside region " + c.OutsideRegion
	}
	return "the cluster"
}

// counted: m is one of the members a replica condition can count (in its
// region filter, not the primary).
func counted(v View, c Check, m Member) bool {
	return m.Name != v.Primary && (c.Region == "" || m.Region == c.Region) && (c.OutsideRegion == "" || m.Region != c.OutsideRegion)
}

// candidates counts the members a replica condition can count.
func candidates(v View, c Check) int {
	n := 0
	for _, m := range v.Members {
		if counted(v, c, m) {
			n++
		}
	}
	return n
}

// foreseeCheck describes a condition and whether it holds on the view;
// a region it names must have a member, and a validation about the
// primary must hold on the simulated view.
func foreseeCheck(sim View, path string, c Check, validation bool) (string, []error) {
	var errs []error
	for _, f := range []struct{ name, region string }{{"region", c.Region}, {"outside_region", c.OutsideRegion}} {
		if f.region != "" && !sim.hasRegion(f.region) {
			errs = append(errs, fmt.Errorf("%s.%s: no member of cluster %s is in region %s", path, f.name, sim.Cluster, f.region))
		}
	}
	ok, why := met(c, sim)
	limit := orDefault(c.Timeout, DefaultValidateTimeout.String())
	if !validation {
		limit = orDefault(c.Timeout, defaultTimeout[ActionWait].String())
	}
	line := fmt.Sprintf("%s (up to %s): ", describeCheck(c), limit)
	switch {
	case ok:
		line += "holds now: " + why
	case validation && (c.Condition == CondPrimaryInRegion || c.Condition == CondPrimaryNotInRegion):
		errs = append(errs, fmt.Errorf("%s: would fail after the step: %s", path, why))
		line += "WOULD FAIL: " + why
	default:
		line += "not met now: " + why
	}
	return line, errs
}

// describe says what a body does, in words.
func describe(b Body) string {
	switch b.Action {
	case ActionSwitchover:
		switch {
		case b.ToNode != "":
			return "switch over to node " + b.ToNode
		case b.ToRegion != "":
			return "switch over to region " + b.ToRegion
		case b.AwayFromRegion != "":
			return "switch over away from region " + b.AwayFromRegion
		}
		return "switch over back to the primary from before the step"
	case ActionWait:
		return "wait for " + describeCheck(b.Check)
	case ActionBackup:
		return "back up tier " + b.Tier
	case ActionCommand:
		return fmt.Sprintf("run on %s: %s", b.Node, b.Run)
	case ActionNotify:
		return "notify: " + b.Message
	}
	return string(b.Action)
}

func describeCheck(c Check) string {
	s := string(c.Condition)
	for _, f := range []struct{ k, v string }{{"bytes", c.Bytes}, {"region", c.Region}, {"outside_region", c.OutsideRegion}, {"count", c.Count}} {
		if f.v != "" {
			s += " " + f.k + "=" + f.v
		}
	}
	return s
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
