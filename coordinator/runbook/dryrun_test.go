package runbook

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestDryRun: the plan of a run and the preconditions refused, each
// naming its field; the view is left as it was.
func TestDryRun(t *testing.T) {
	evac, back := builtin("regional-evacuation"), builtin("regional-failback")
	eu := map[string]string{"region": "eu"}
	custom := func(steps string) Runbook {
		return mustParse(t, "name: c\nsteps:\n"+steps)
	}
	evacSteps := func() Runbook { return custom("  - {id: s, action: switchover, away_from_region: eu}\n") }
	for _, tc := range []struct {
		name   string
		rb     Runbook
		params map[string]string
		view   func(v *View)
		err    error    // nil: the plan is clean
		want   []string // in the error (or, when err is nil, in the plan)
	}{
		{"evacuation plan", evac, eu, nil, nil, []string{
			"runbook regional-evacuation on cluster main (primary a1 in region eu, failover paused=false):",
			" 2. replica-caught-up: lag_under bytes=16MB outside_region=eu (up to 10m): holds now: 2 healthy replicas outside region eu lag under 16777216 bytes (b1, b2) (want 1)",
			" 3. move-primary: switch over away from region eu: from a1 to b2 (region us), no acknowledged commit lost",
			"    validate: primary_not_in_region region=eu (up to 2m): holds now: the primary b2 is in region us",
			"    rollback (if the run rolls back): switch over back to the primary from before the step",
			" 4. keep-out: pause automatic failover\n",
		}},
		{"evacuation when the replicas lag: the wait is planned, not refused", evac, eu, func(v *View) {
			v.Members[2].LagBytes, v.Members[3].LagBytes = 1<<30, -1
		}, nil, []string{"not met now: 0 healthy replicas outside region eu lag under 16777216 bytes (want 1)"}},
		{"already paused: nothing to do", evac, eu, func(v *View) { v.Paused = true }, nil,
			[]string{"keep-out: pause automatic failover: already paused, nothing to do"}},
		{"no member outside the region", evac, eu, func(v *View) {
			v.Members[2].Region, v.Members[3].Region = "eu", "eu"
		}, ErrPrecondition, []string{"steps[2].away_from_region: no healthy replica outside region eu"}},
		{"replicas outside the region down: the wait is planned and assumed met", evac, eu, func(v *View) {
			v.Members[2].Healthy, v.Members[3].Role = false, "stopped"
		}, nil, []string{"(assumed met for the steps after it", "from a1 to b1 (region us)"}},
		{"failback waiting for more replicas than the region has: refused, not assumed", back, map[string]string{"region": "eu", "replicas": "3"}, func(v *View) {
			v.Primary, v.Members[0].Role, v.Members[3].Role = "b2", RoleReplica, RolePrimary
			v.Members[0].Healthy, v.Members[1].Healthy = false, false
		}, ErrPrecondition, []string{"steps[1]: healthy_replicas can never hold: region eu has 2 members that could be replicas, want 3"}},
		{"another operation in flight", evac, eu, func(v *View) { v.BackupInFlight = true }, ErrPrecondition,
			[]string{"cluster main: a backup is in flight: one operation at a time"}},
		{"another runbook running", evac, eu, func(v *View) { v.OtherRun = "regional-failback/r7" }, ErrPrecondition,
			[]string{"cluster main: runbook regional-failback/r7 is in flight"}},
		{"primary unhealthy", evac, eu, func(v *View) { v.Members[0].Healthy = false }, ErrPrecondition,
			[]string{"steps[2]: the primary a1 is not healthy: a switchover stops a working primary (use failover)"}},
		{"region unknown", back, map[string]string{"region": "ap"}, nil, ErrPrecondition, []string{
			"steps[1].region: no member of cluster main is in region ap",
			"steps[3].to_region: no healthy replica in region ap",
		}},
		{"region not given", back, nil, nil, ErrInvalid, []string{"params: region required but not given"}},
		{"failback to where the primary is: nothing to do", back, eu, nil, nil,
			[]string{"switch over to region eu: the primary a1 already is there, nothing to do"}},
		{"target node unknown", custom("  - {id: s, action: switchover, to_node: zz}\n"), nil, nil, ErrPrecondition,
			[]string{`steps[0].to_node: "zz" is not a member of cluster main`}},
		{"target node not a healthy replica", custom("  - {id: s, action: switchover, to_node: b1}\n"), nil, func(v *View) { v.Members[2].Healthy = false }, ErrPrecondition,
			[]string{"steps[0].to_node: b1 is not a healthy replica"}},
		{"validation would fail", custom("  - {id: s, action: switchover, to_node: b1, validate: {condition: primary_in_region, region: eu}}\n"), nil, nil, ErrPrecondition,
			[]string{"steps[0].validate: would fail after the step: the primary b1 is in region us"}},
		{"switchovers chain on the simulated view", custom("  - {id: s, action: switchover, to_node: b1}\n  - {id: t, action: switchover, to_node: a1}\n"), nil, nil, nil,
			[]string{"2. t: switch over to node a1: from b1 to a1 (region eu)"}},
		{"backup tier not in the policy", custom("  - {id: b, action: backup, tier: hourly}\n"), nil, func(v *View) { v.Tiers = []string{"daily"} }, ErrPrecondition,
			[]string{`steps[0].tier: "hourly" is not a tier of the policy (daily)`}},
		{"command node unknown", custom("  - {id: c, action: command, node: zz, run: 'true'}\n"), nil, nil, ErrPrecondition,
			[]string{`steps[0].node: "zz" is not a member of cluster main`}},
		{"a replica tagged no-failover is no switchover target", custom("  - {id: s, action: switchover, to_node: b1}\n"), nil, func(v *View) { v.Members[2].NoFailover = true }, ErrPrecondition,
			[]string{"steps[0].to_node: b1 is tagged no-failover"}},
		{"the switchover would refuse the least lagging replica: the next one", evacSteps(), nil, func(v *View) { v.Members[3].NoTarget = "lag 1 GB over the limit" }, nil,
			[]string{"from a1 to b1 (region us)"}},
		{"a replica tagged no-failover still runs a drill", custom("  - {id: d, action: drill, node: b1}\n"), nil, func(v *View) { v.Members[2].NoFailover = true }, nil,
			[]string{"restore drill on b1"}},
		{"drill needs a replica", custom("  - {id: d, action: drill}\n"), nil, func(v *View) { v.Members = v.Members[:1] }, ErrPrecondition,
			[]string{"steps[0]: no healthy replica to run a restore drill on"}},
	} {
		v := twoRegions()
		if tc.view != nil {
			tc.view(&v)
		}
		before := twoRegions()
		if tc.view != nil {
			tc.view(&before)
		}
		plan, err := DryRun(tc.rb, tc.params, v)
		if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			continue
		}
		text := plan.String() + "\n"
		if err != nil {
			text = err.Error()
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: %q does not say %q", tc.name, text, w)
			}
		}
		if !reflect.DeepEqual(v, before) {
			t.Errorf("%s: DryRun changed the view", tc.name)
		}
	}
}
