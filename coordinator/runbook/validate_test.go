package runbook

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// good is a valid runbook the bad cases below each break in one place.
const good = `
name: move
params:
  - {name: region, required: true}
steps:
  - id: pause
    action: pause
  - id: switch
    action: switchover
    to_region: ${region}
    validate: {condition: primary_in_region, region: "${region}", timeout: 1m}
    rollback: {action: switchover, to_previous: true}
    after: [pause]
  - id: tell
    action: notify
    message: moved to ${region}
`

// TestParseRefuses: bad runbooks are refused with the field named (issue
// 19: unknown step, cycle, missing target region, malformed YAML), and
// Parse returns nothing of them.
func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"unknown action", "action: pause", "action: reboot",
			[]string{`steps[0].action: unknown action "reboot" (want pause, resume, switchover, wait, backup, drill, command, notify)`}},
		{"missing action", "    action: pause\n", "",
			[]string{`steps[0].action: required`}},
		{"cycle", "  - id: pause\n    action: pause\n", "  - id: pause\n    action: pause\n    after: [switch]\n",
			[]string{`steps[0].after: cycle pause -> switch -> pause`}},
		{"missing target region", "to_region: ${region}", "to_region: \"\"",
			[]string{`steps[1]: switchover needs to_node, to_region or away_from_region`}},
		{"malformed YAML", "    action: notify\n", "    action: [notify\n",
			[]string{`invalid YAML`, `line 14`}},
		{"duplicate step id", "id: tell", "id: pause",
			[]string{`steps[2].id: duplicate step id "pause" (also steps[0])`}},
		{"unknown field", "    message: moved", "    mesage: moved",
			[]string{`steps[2].mesage`, `line 16`}},
		{"unknown field in validate", "timeout: 1m}", "timeout: 1m, regoin: x}",
			[]string{`steps[1].validate.regoin`}},
		{"unknown parameter reference", "message: moved to ${region}", "message: moved to ${regoin}",
			[]string{`steps[2].message: unknown parameter ${regoin} (declared: region)`}},
		{"after an unknown step", "after: [pause]", "after: [paus]",
			[]string{`steps[1].after[0]: no step has id "paus"`}},
		{"after itself", "after: [pause]", "after: [switch]",
			[]string{`steps[1].after[0]: step switch cannot run after itself`}},
		{"field of another action", "    message: moved to ${region}", "    message: x\n    tier: daily",
			[]string{`steps[2].tier: not a field of action notify`}},
		{"two targets", "to_region: ${region}", "to_region: ${region}\n    to_node: a2",
			[]string{`steps[1]: switchover takes one of`}},
		{"to_previous outside a rollback", "to_region: ${region}", "to_previous: true",
			[]string{`steps[1].to_previous: only a rollback can switch back`}},
		{"nested rollback", "{action: switchover, to_previous: true}", "{action: switchover, to_previous: true, rollback: {action: resume}}",
			[]string{`steps[1].rollback.rollback`}},
		{"timeout zero", "timeout: 1m}", "timeout: 0s}",
			[]string{`steps[1].validate.timeout: "0s": must be more than 0`}},
		{"timeout over a day", "timeout: 1m}", "timeout: 2d}",
			[]string{`steps[1].validate.timeout: "2d": more than 24h0m0s`}},
		{"validation condition unknown", "condition: primary_in_region", "condition: primary_on_mars",
			[]string{`steps[1].validate.condition: unknown condition "primary_on_mars"`}},
		{"validation needs its region", `region: "${region}", `, "",
			[]string{`steps[1].validate.region: required`}},
		{"bad step id", "id: tell", "id: Tell_Them",
			[]string{`steps[2].id: "Tell_Them": use lower-case letters`}},
		{"required param with a default", "{name: region, required: true}", "{name: region, required: true, default: eu}",
			[]string{`params[0].default: a required parameter has no default`}},
		{"no name", "name: move", "description: x",
			[]string{`name: required`}},
	} {
		doc := strings.Replace(good, tc.old, tc.new, 1)
		if doc == good {
			t.Fatalf("%s: the case changes nothing", tc.name)
		}
		rb, err := Parse([]byte(doc))
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want an ErrInvalid", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
		if rb.Name != "" || rb.Steps != nil {
			t.Errorf("%s: Parse returned a runbook with its error", tc.name)
		}
	}
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("the good runbook: %v", err)
	}
}

// TestWaitFields: the fields of a wait step and their values.
func TestWaitFields(t *testing.T) {
	base := "name: w\nsteps:\n  - id: w\n    action: wait\n"
	for _, tc := range []struct{ body, want string }{
		{"    condition: lag_under\n    bytes: 1MB\n", ""},
		{"    condition: lag_under\n    bytes: 1048576\n    region: eu\n    count: 2\n    timeout: 90s\n", ""},
		{"    condition: repos_caught_up\n", ""},
		{"    condition: healthy_replicas\n    outside_region: eu\n", ""},
		{"    condition: lag_under\n", "steps[0].bytes: required"},
		{"    condition: lag_under\n    bytes: lots\n", `steps[0].bytes: "lots" is not a byte amount`},
		{"    condition: lag_under\n    bytes: 1PB\n", `steps[0].bytes: "1PB" is not a byte amount`},
		{"    condition: healthy_replicas\n    count: 0\n", `steps[0].count: "0": want a whole number from 1 to 1000`},
		{"    condition: healthy_replicas\n    region: a\n    outside_region: b\n", "steps[0]: region and outside_region exclude each other"},
		{"    condition: repos_caught_up\n    bytes: 1\n", "steps[0].bytes: not a field of condition repos_caught_up"},
		{"    condition: primary_in_region\n    region: eu\n", `steps[0].condition: unknown condition "primary_in_region" (want lag_under, healthy_replicas, repos_caught_up)`},
		{"", "steps[0].condition: required"},
		{"    condition: repos_caught_up\n    timeout: soon\n", `steps[0].timeout: "soon" is not a duration`},
	} {
		_, err := Parse([]byte(base + tc.body))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.body, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want %q", tc.body, err, tc.want)
		}
	}
}

// TestBounds: a runbook stored in Raft stays small.
func TestBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: big\nsteps:\n")
	for i := 0; i <= MaxSteps; i++ {
		fmt.Fprintf(&b, "  - {id: s%d, action: resume}\n", i)
	}
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "steps: 51 steps, more than 50") {
		t.Errorf("too many steps: %v", err)
	}
	long := "name: l\nsteps:\n  - {id: n, action: notify, message: " + strings.Repeat("x", MaxText+1) + "}\n"
	if _, err := Parse([]byte(long)); err == nil || !strings.Contains(err.Error(), "steps[0].message: longer than 1024 bytes") {
		t.Errorf("long message: %v", err)
	}
	huge := "name: h\n" + strings.Repeat("#", MaxDocument)
	if _, err := Parse([]byte(huge)); err == nil || !strings.Contains(err.Error(), "more than 65536") {
		t.Errorf("huge document: %v", err)
	}
}

// TestOrder: after may name a later-declared step; the executed order is
// topological and otherwise keeps declaration order.
func TestOrder(t *testing.T) {
	rb, err := Parse([]byte(`
name: o
steps:
  - {id: a, action: resume, after: [c]}
  - {id: b, action: resume}
  - {id: c, action: resume}
  - {id: d, action: resume, after: [a, b]}
`))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}
	ord, cyc := order(rb.Steps, ids)
	if got := []int{1, 2, 0, 3}; !slices.Equal(ord, got) || cyc != nil {
		t.Errorf("order %v (cycle %v), want %v", ord, cyc, got)
	}
	_, err = Parse([]byte(`
name: o
steps:
  - {id: a, action: resume}
  - {id: b, action: resume, after: [d]}
  - {id: c, action: resume, after: [b]}
  - {id: d, action: resume, after: [c]}
`))
	if err == nil || !strings.Contains(err.Error(), "steps[1].after: cycle b -> d -> c -> b") {
		t.Errorf("three-step cycle: %v", err)
	}
}

// TestResolve: parameters given at run time.
func TestResolve(t *testing.T) {
	rb, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Resolve(rb, map[string]string{"region": "eu-west"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Steps[1].ToRegion != "eu-west" || r.Steps[1].Validate.Region != "eu-west" || r.Steps[2].Message != "moved to eu-west" {
		t.Errorf("not substituted: %+v", r.Steps)
	}
	if rb.Steps[1].ToRegion != "${region}" || rb.Steps[1].Validate.Region != "${region}" {
		t.Errorf("Resolve changed its input: %+v", rb.Steps[1])
	}
	for _, tc := range []struct {
		params map[string]string
		want   string
	}{
		{nil, "params: region required but not given"},
		{map[string]string{"region": ""}, "params: region required but given empty"},
		{map[string]string{"region": "eu", "zone": "a"}, `params: unknown parameter "zone" (declared: region)`},
		{map[string]string{"region": "${region}"}, `params: region: a value cannot hold "${"`},
		{map[string]string{"region": "Bad Region!"}, `steps[1].to_region`},
	} {
		if _, err := Resolve(rb, tc.params); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.params, err, tc.want)
		}
	}
	// A numeric field from a parameter is checked once substituted.
	w, err := Parse([]byte("name: w\nparams: [{name: lag, default: 1MB}]\nsteps:\n  - {id: w, action: wait, condition: lag_under, bytes: \"${lag}\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(w, map[string]string{"lag": "much"}); err == nil || !strings.Contains(err.Error(), `steps[0].bytes: "much" is not a byte amount`) {
		t.Errorf("bad byte parameter: %v", err)
	}
}

// TestBuiltin: the shipped runbooks parse, and need their region.
func TestBuiltin(t *testing.T) {
	var names []string
	for _, rb := range Builtin() {
		names = append(names, rb.Name)
		if _, err := Resolve(rb, nil); err == nil || !strings.Contains(err.Error(), "params: region required but not given") {
			t.Errorf("%s without region: %v", rb.Name, err)
		}
		if _, err := Resolve(rb, map[string]string{"region": "eu-west"}); err != nil {
			t.Errorf("%s: %v", rb.Name, err)
		}
	}
	if !slices.Equal(names, []string{"regional-evacuation", "regional-failback"}) {
		t.Errorf("builtin %v", names)
	}
	a, b := Builtin(), Builtin()
	a[0].Steps[0].ID = "changed"
	if b[0].Steps[0].ID == "changed" {
		t.Error("Builtin shares its runbooks between calls")
	}
}
