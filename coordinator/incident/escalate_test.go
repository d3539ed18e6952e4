package incident

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func policy() EscalationPolicy {
	return EscalationPolicy{Levels: []Level{
		{Name: "on-call", Channels: []string{"pagerduty"}, Timeout: 10 * time.Minute},
		{Name: "lead", Channels: []string{"slack"}, Timeout: 20 * time.Minute},
		{Name: "head", Channels: []string{"phone"}, Timeout: 30 * time.Minute},
	}}
}

func TestEscalate(t *testing.T) {
	lim := DefaultLimits()
	p := policy()
	open, _, _ := Observe(State{}, sig(10, "k", "x"), lim, t0)
	acked, _ := Ack(open, "INC-10", "alice", "", lim, t0.Add(time.Minute))
	cases := []struct {
		name   string
		st     State
		steps  []time.Duration // Escalate runs at t0+each
		levels []int           // level after each run
		moves  []int           // escalations returned by each run
	}{
		{"#1 within the first timeout nothing moves", open, []time.Duration{9 * time.Minute}, []int{0}, []int{0}},
		{"#2 past the first timeout to level 1", open, []time.Duration{10 * time.Minute}, []int{1}, []int{1}},
		{"#3 twice at the same now escalates once (a new leader replays)", open,
			[]time.Duration{10 * time.Minute, 10 * time.Minute}, []int{1, 1}, []int{1, 0}},
		{"#4 level 1 waits its own timeout from the escalation", open,
			[]time.Duration{10 * time.Minute, 29 * time.Minute, 30 * time.Minute}, []int{1, 1, 2}, []int{1, 0, 1}},
		{"#5 the last level is not exceeded", open,
			[]time.Duration{10 * time.Minute, 30 * time.Minute, 10 * time.Hour}, []int{1, 2, 2}, []int{1, 1, 0}},
		{"#6 a long outage moves one level per run, none skipped", open,
			[]time.Duration{5 * time.Hour, 5 * time.Hour}, []int{1, 1}, []int{1, 0}},
		{"#7 acknowledged: never escalated", acked, []time.Duration{time.Hour}, []int{0}, []int{0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := c.st
			for i, d := range c.steps {
				var moves []Escalation
				var err error
				st, moves, err = Escalate(st, p, t0.Add(d))
				if err != nil {
					t.Fatal(err)
				}
				if len(moves) != c.moves[i] || st.Incidents[0].EscalationLevel != c.levels[i] {
					t.Fatalf("run %d at +%s: %d moves, level %d; want %d moves, level %d", i, d, len(moves), st.Incidents[0].EscalationLevel, c.moves[i], c.levels[i])
				}
			}
		})
	}
	st, moves, err := Escalate(open, p, t0.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := []Escalation{{ID: "INC-10", Cluster: "c1", From: 0, To: 1, Channels: []string{"slack"}}}
	if !reflect.DeepEqual(moves, want) {
		t.Fatalf("moves = %+v, want %+v", moves, want)
	}
	last := st.Incidents[0].Timeline[len(st.Incidents[0].Timeline)-1]
	if last.Kind != KindEscalated || !last.Time.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("timeline does not record the escalation: %+v", last)
	}
	if open.Incidents[0].EscalationLevel != 0 || len(open.Incidents[0].Timeline) != 1 {
		t.Fatalf("Escalate modified its input state")
	}
}

func TestEscalationPolicyValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		p    EscalationPolicy
	}{
		{"no levels", EscalationPolicy{}},
		{"zero timeout", EscalationPolicy{Levels: []Level{{Name: "a", Timeout: 0}, {Name: "b", Timeout: time.Minute}}}},
		{"no name", EscalationPolicy{Levels: []Level{{Timeout: time.Minute}}}},
	} {
		if err := c.p.Validate(); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
		if _, _, err := Escalate(State{}, c.p, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Escalate err = %v, want ErrInvalid", c.name, err)
		}
	}
	if err := policy().Validate(); err != nil {
		t.Errorf("valid policy refused: %v", err)
	}
}
