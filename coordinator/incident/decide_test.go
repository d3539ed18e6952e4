package incident

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func sig(seq uint64, key, msg string) Signal {
	return Signal{Seq: seq, DedupKey: key, Title: "primary db1 failed over", Cluster: "c1",
		Category: Failover, Severity: High, Actor: "coordinator", Message: msg}
}

// observeAll folds the signals in order, failing the test on any error.
func observeAll(t *testing.T, st State, lim Limits, sigs []Signal, at []time.Time) State {
	t.Helper()
	for i, s := range sigs {
		var err error
		st, _, err = Observe(st, s, lim, at[i])
		if err != nil {
			t.Fatalf("observe %d: %v", i, err)
		}
	}
	return st
}

func TestPriorityOf(t *testing.T) {
	for s, want := range map[Severity]Priority{Critical: "P1", High: "P2", Medium: "P3", Low: "P4", "urgent": ""} {
		if got := PriorityOf(s); got != want {
			t.Errorf("PriorityOf(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestObserve(t *testing.T) {
	lim := DefaultLimits()
	min := time.Minute
	cases := []struct {
		name      string
		sigs      []Signal
		at        []time.Time
		incidents int      // incidents in the state afterwards
		timeline  []int    // timeline length of each incident
		occ       []uint64 // occurrences of each incident
		status    []Status
	}{
		{"#1 first signal opens one incident",
			[]Signal{sig(10, "c1/failover", "db1 down")}, []time.Time{t0},
			1, []int{1}, []uint64{1}, []Status{Open}},
		{"#2 the same condition every tick folds into it, one entry for the repeated message",
			[]Signal{sig(10, "c1/failover", "db1 down"), sig(11, "c1/failover", "db1 down"), sig(12, "c1/failover", "db1 down")},
			[]time.Time{t0, t0.Add(min), t0.Add(2 * min)},
			1, []int{1}, []uint64{3}, []Status{Open}},
		{"#3 a distinct message adds one entry, its repeat none",
			[]Signal{sig(10, "c1/failover", "db1 down"), sig(11, "c1/failover", "db2 promoted"), sig(12, "c1/failover", "db2 promoted")},
			[]time.Time{t0, t0.Add(min), t0.Add(2 * min)},
			1, []int{2}, []uint64{3}, []Status{Open}},
		{"#4 the same message after the repeat window adds one entry again",
			[]Signal{sig(10, "c1/failover", "db1 down"), sig(11, "c1/failover", "db1 down")},
			[]time.Time{t0, t0.Add(lim.RepeatWindow + min)},
			1, []int{2}, []uint64{2}, []Status{Open}},
		{"#5 a different dedup key opens a second incident",
			[]Signal{sig(10, "c1/failover", "db1 down"), sig(11, "c1/fencing", "db1 fenced")},
			[]time.Time{t0, t0.Add(min)},
			2, []int{1, 1}, []uint64{1, 1}, []Status{Open, Open}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := observeAll(t, State{}, lim, c.sigs, c.at)
			if len(st.Incidents) != c.incidents {
				t.Fatalf("incidents = %d, want %d: %+v", len(st.Incidents), c.incidents, st.Incidents)
			}
			for i, in := range st.Incidents {
				if len(in.Timeline) != c.timeline[i] || in.Occurrences != c.occ[i] || in.Status != c.status[i] {
					t.Errorf("incident %d: timeline %d occurrences %d status %s, want %d %d %s: %+v",
						i, len(in.Timeline), in.Occurrences, in.Status, c.timeline[i], c.occ[i], c.status[i], in.Timeline)
				}
			}
			if st.Incidents[0].ID != IDFor(10) {
				t.Errorf("first id = %q, want %q", st.Incidents[0].ID, IDFor(10))
			}
		})
	}
}

func TestObserveAfterResolveOpensNew(t *testing.T) {
	lim := DefaultLimits()
	st, _, err := Observe(State{}, sig(10, "c1/failover", "db1 down"), lim, t0)
	if err != nil {
		t.Fatal(err)
	}
	st, err = Resolve(st, IDFor(10), "alice", "replaced the disk", lim, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	st, res, err := Observe(st, sig(20, "c1/failover", "db1 down"), lim, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Opened || res.ID != IDFor(20) || len(st.Incidents) != 2 {
		t.Fatalf("after resolve: result %+v, %d incidents; want a new INC-20", res, len(st.Incidents))
	}
}

func TestObserveRaisesSeverityAndRecurs(t *testing.T) {
	lim := DefaultLimits()
	st, _, _ := Observe(State{}, sig(10, "k", "lag 2 GB"), lim, t0)
	st, _, err := Clear(st, "k", "coordinator", "lag back under target", lim, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Incidents[0].ConditionCleared || st.Incidents[0].Status != Open {
		t.Fatalf("after clear: %+v, want cleared and still open", st.Incidents[0])
	}
	s := sig(11, "k", "lag 2 GB")
	s.Severity = Critical
	st, res, err := Observe(st, s, lim, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	in := st.Incidents[0]
	if res.Opened || in.ConditionCleared || in.Severity != Critical || in.Priority() != "P1" {
		t.Fatalf("after recurrence: %+v result %+v; want the same incident, not cleared, critical P1", in, res)
	}
}

func TestObserveValidation(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxOpen = 1
	base, _, _ := Observe(State{}, sig(10, "c1/a", "x"), lim, t0)
	long := strings.Repeat("x", lim.MaxTitle+1)
	cases := []struct {
		name  string
		mod   func(*Signal)
		field string
		err   error
	}{
		{"empty key", func(s *Signal) { s.DedupKey = "" }, "dedup_key", ErrInvalid},
		{"long title", func(s *Signal) { s.Title = long }, "title", ErrInvalid},
		{"long message", func(s *Signal) { s.Message = strings.Repeat("m", lim.MaxMessage+1) }, "message", ErrInvalid},
		{"control char", func(s *Signal) { s.Cluster = "c1\n" }, "cluster", ErrInvalid},
		{"bad category", func(s *Signal) { s.Category = "boom" }, "category", ErrInvalid},
		{"bad severity", func(s *Signal) { s.Severity = "urgent" }, "severity", ErrInvalid},
		{"zero seq", func(s *Signal) { s.Seq = 0 }, "seq", ErrInvalid},
		{"seq already used", func(s *Signal) { s.Seq = 10 }, "INC-10", ErrInvalid},
		{"too many open in cluster", func(s *Signal) {}, "c1", ErrTooManyOpen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := sig(11, "c1/b", "y")
			c.mod(&s)
			before := base.Clone()
			got, _, err := Observe(base, s, lim, t0)
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("err = %v, want %v naming %q", err, c.err, c.field)
			}
			if !reflect.DeepEqual(got, before) || !reflect.DeepEqual(base, before) {
				t.Fatalf("refused input changed the state")
			}
		})
	}
	// A repeat into an existing incident is not refused by the open limit.
	if _, _, err := Observe(base, sig(12, "c1/a", "x"), lim, t0); err != nil {
		t.Fatalf("repeat at the open limit: %v", err)
	}
}

func TestTransitions(t *testing.T) {
	lim := DefaultLimits()
	open, _, _ := Observe(State{}, sig(10, "k", "x"), lim, t0)
	acked, err := Ack(open, "INC-10", "alice", "", lim, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := Resolve(acked, "INC-10", "alice", "fixed", lim, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if resolved.Incidents[0].Status != Resolved || len(resolved.Incidents[0].Notes) != 1 || resolved.Incidents[0].Resolved.IsZero() {
		t.Fatalf("resolved: %+v", resolved.Incidents[0])
	}
	if open.Incidents[0].Status != Open {
		t.Fatalf("Ack modified its input state")
	}
	cases := []struct {
		name string
		do   func() error
		err  error
		want string
	}{
		{"ack acknowledged", func() error { _, err := Ack(acked, "INC-10", "bob", "", lim, t0); return err }, ErrTransition, "INC-10 is acknowledged"},
		{"ack resolved", func() error { _, err := Ack(resolved, "INC-10", "bob", "", lim, t0); return err }, ErrTransition, "INC-10 is resolved"},
		{"resolve resolved", func() error { _, err := Resolve(resolved, "INC-10", "bob", "again", lim, t0); return err }, ErrTransition, "INC-10 is resolved"},
		{"resolve without note", func() error { _, err := Resolve(open, "INC-10", "bob", "", lim, t0); return err }, ErrInvalid, "note"},
		{"ack unknown", func() error { _, err := Ack(open, "INC-99", "bob", "", lim, t0); return err }, ErrNotFound, "INC-99"},
		{"ack without actor", func() error { _, err := Ack(open, "INC-10", "", "", lim, t0); return err }, ErrInvalid, "actor"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %v containing %q", err, c.err, c.want)
			}
		})
	}
	// Resolving straight from open is allowed.
	if _, err := Resolve(open, "INC-10", "bob", "false alarm", lim, t0); err != nil {
		t.Fatalf("resolve open: %v", err)
	}
}

func TestAutoResolve(t *testing.T) {
	lim := DefaultLimits()
	st, _, _ := Observe(State{}, sig(10, "lag", "lag"), lim, t0)
	s := sig(11, "fail", "down")
	st, _, _ = Observe(st, s, lim, t0)
	st, _, _ = Clear(st, "lag", "coordinator", "caught up", lim, t0.Add(time.Minute))
	st, _, _ = Clear(st, "fail", "coordinator", "back", lim, t0.Add(time.Minute))
	st.Incidents[0].Category = CopyLag
	p := AutoResolvePolicy{Categories: []Category{CopyLag}, Hold: 10 * time.Minute}
	if _, ids, _ := AutoResolve(st, p, t0.Add(5*time.Minute)); len(ids) != 0 {
		t.Fatalf("resolved %v before the hold time", ids)
	}
	got, ids, _ := AutoResolve(st, p, t0.Add(11*time.Minute))
	if !reflect.DeepEqual(ids, []string{"INC-10"}) || got.Incidents[0].Status != Resolved || got.Incidents[1].Status != Open {
		t.Fatalf("auto-resolved %v; statuses %s %s; want only INC-10 (copy_lag) resolved", ids, got.Incidents[0].Status, got.Incidents[1].Status)
	}
}
