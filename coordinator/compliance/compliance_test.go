package compliance

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestDecide(t *testing.T) {
	tight := Targets{RTO: time.Minute, RPO: time.Second, Failover: 10 * time.Second}
	keys := func(bs []Breach) string {
		var ks []string
		for _, b := range bs {
			ks = append(ks, b.Target+"/"+b.Subject)
		}
		return strings.Join(ks, " ")
	}
	for _, tc := range []struct {
		name    string
		targets Targets
		m       Measured
		want    string
	}{
		{"nothing measured", tight, Measured{}, ""},
		{"within the defaults", Targets{}, Measured{
			ArchiveRPO:  []RepoRPO{{Repo: "local", Seconds: 299}},
			FailoverRPO: FailoverRPO{Known: true, Candidate: "b", Seconds: 1},
			Failover:    Duration{Recorded: true, Source: SourceFailover, Seconds: 299},
			Drill:       Duration{Recorded: true, Source: SourceDrill, Seconds: 899},
		}, ""},
		{"equal is not a breach", tight, Measured{ArchiveRPO: []RepoRPO{{Repo: "local", Seconds: 1}}}, ""},
		{"archive RPO per repository", tight, Measured{ArchiveRPO: []RepoRPO{
			{Repo: "local", Seconds: 0.5}, {Repo: "dr", Mode: "async", Seconds: 30, Bytes: 1 << 20}, {Repo: "b", Seconds: 2}}},
			"archive_rpo/b archive_rpo/dr"},
		{"failover RPO unknown is not a breach", tight, Measured{FailoverRPO: FailoverRPO{Known: false, Seconds: 100}}, ""},
		{"failover RPO", tight, Measured{FailoverRPO: FailoverRPO{Known: true, Candidate: "pg-b", Seconds: 1.5}}, "failover_rpo/pg-b"},
		{"slow switchover", tight, Measured{Failover: Duration{Recorded: true, Source: SourceSwitchover, Seconds: 11}}, "failover/switchover"},
		{"unrecorded failover", tight, Measured{Failover: Duration{Seconds: 1000}}, ""},
		{"slow drill", tight, Measured{Drill: Duration{Recorded: true, Source: SourceDrill, Seconds: 61}}, "rto/drill"},
		{"all at once, sorted", Targets{RTO: time.Millisecond, RPO: time.Millisecond, Failover: time.Millisecond}, Measured{
			ArchiveRPO:  []RepoRPO{{Repo: "z", Seconds: 1}, {Repo: "a", Seconds: 1}},
			FailoverRPO: FailoverRPO{Known: true, Candidate: "c", Seconds: 1},
			Failover:    Duration{Recorded: true, Source: SourceFailover, Seconds: 1},
			Drill:       Duration{Recorded: true, Source: SourceDrill, Seconds: 1},
		}, "archive_rpo/a archive_rpo/z failover/failover failover_rpo/c rto/drill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.targets, tc.m)
			if keys(got) != tc.want {
				t.Fatalf("breaches %q, want %q (%v)", keys(got), tc.want, got)
			}
			for _, b := range got {
				if b.Measured <= b.Limit || b.Message == "" {
					t.Fatalf("breach %+v", b)
				}
			}
		})
	}
}

func TestTargetsValidate(t *testing.T) {
	if err := DefaultTargets().Validate(); err != nil {
		t.Fatal(err)
	}
	err := Targets{RTO: -time.Second, RPO: time.Microsecond, Failover: 0}.Validate()
	for _, want := range []string{"targets.rto", "targets.rpo", "targets.failover"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v does not name %s", err, want)
		}
	}
	if got := TargetsFromProto(&pgdrv1.RecoveryTargets{RpoMs: 1}); got.RPO != time.Millisecond || got.RTO != DefaultRTO || got.Failover != DefaultFailover {
		t.Fatalf("targets %+v", got)
	}
}

func ev(kind, node string, at time.Time, msg string, details map[string]string) *pgdrv1.HistoryEvent {
	return &pgdrv1.HistoryEvent{Kind: kind, Node: node, Time: timestamppb.New(at), Message: msg, Details: details}
}

func TestRecoveries(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	s := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	for _, tc := range []struct {
		name   string
		events []*pgdrv1.HistoryEvent
		want   []Recovery
	}{
		{"failover measured from detection to the recorded writable time", []*pgdrv1.HistoryEvent{
			ev("failover-intent", "b", s(10), "promote b", map[string]string{DetailOldPrimary: "a", DetailDetectedAt: FormatTime(s(4))}),
			ev("failover-step", "b", s(11), "epoch 2: b recorded as primary; ordering it to promote", nil),
			ev("failover-step", "b", s(13), "promoted: in 1.2s", nil),
			ev("failover-step", "c", s(14), "c follows b", nil),
			ev("failover-result", "b", s(15), "done: b is primary at epoch 2", map[string]string{DetailWritableAt: FormatTime(s(12))}),
		}, []Recovery{{Kind: "failover", Node: "b", OldPrimary: "a", Started: s(4), Writable: s(12), Measured: true, Duration: 8 * time.Second, OK: true, Result: "done: b is primary at epoch 2"}}},
		{"older records: the promoted step, no detection time", []*pgdrv1.HistoryEvent{
			ev("switchover-intent", "b", s(0), "switch", map[string]string{DetailOldPrimary: "a"}),
			ev("switchover-step", "a", s(2), "a stopped cleanly", nil),
			ev("switchover-step", "b", s(5), "b promoted", nil),
			ev("switchover-result", "b", s(9), "done: b is primary at epoch 3; a rejoined as a replica", nil),
		}, []Recovery{{Kind: "switchover", Node: "b", OldPrimary: "a", Started: s(0), Writable: s(5), Measured: true, Duration: 5 * time.Second, OK: true, Result: "done: b is primary at epoch 3; a rejoined as a replica"}}},
		{"failed: not measured; a result without intent is skipped; manual kept apart", []*pgdrv1.HistoryEvent{
			ev("failover-result", "x", s(0), "done: x", nil),
			ev("manual-failover-intent", "c", s(1), "promote c", nil),
			ev("failover-intent", "b", s(2), "promote b", nil),
			ev("failover-result", "b", s(3), "failed: b could not be promoted", nil),
			ev("manual-failover-result", "c", s(7), "done: c is primary", nil),
			ev("failover-refused", "b", s(8), "no candidate", nil),
		}, []Recovery{
			{Kind: "failover", Node: "b", Started: s(2), Result: "failed: b could not be promoted"},
			{Kind: "manual-failover", Node: "c", Started: s(1), Writable: s(7), Measured: true, Duration: 6 * time.Second, OK: true, Result: "done: c is primary"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Recoveries(tc.events)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d recoveries %+v, want %+v", len(got), got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("recovery %d:\n got %+v\nwant %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
	last := LastRecovery(Recoveries([]*pgdrv1.HistoryEvent{
		ev("failover-intent", "b", s(0), "", nil), ev("failover-result", "b", s(3), "done", nil),
		ev("switchover-intent", "a", s(10), "", nil), ev("switchover-result", "a", s(12), "done", nil),
		ev("failover-intent", "b", s(20), "", nil), ev("failover-result", "b", s(30), "failed", nil),
	}))
	if !last.Recorded || last.Source != SourceSwitchover || last.Seconds != 2 {
		t.Fatalf("last recovery %+v, want the switchover of 2s", last)
	}
}

func TestOpenOneStartOneClear(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := Breach{Target: TargetArchiveRPO, Subject: "local"}
	b := Breach{Target: TargetFailoverRPO, Subject: "pg-b"}
	o := NewOpen(nil, 1)
	steps := []struct {
		decided          []Breach
		started, cleared int
	}{
		{[]Breach{a}, 1, 0},
		{[]Breach{a}, 0, 0},
		{[]Breach{a, b}, 1, 0},
		{[]Breach{b}, 0, 1},
		{nil, 0, 1},
		{nil, 0, 0},
	}
	for i, st := range steps {
		ch := o.Update(t0.Add(time.Duration(i)*time.Second), st.decided)
		if len(ch.Started) != st.started || len(ch.Cleared) != st.cleared {
			t.Fatalf("step %d: started %v cleared %v, want %d and %d", i, ch.Started, ch.Cleared, st.started, st.cleared)
		}
	}
	// A new leader rebuilds from history: no second start for a, one clear.
	hist := []*pgdrv1.HistoryEvent{
		ev(KindBreached, "", t0, "a", map[string]string{DetailTarget: a.Target, DetailSubject: a.Subject}),
		ev(KindBreached, "", t0, "b", map[string]string{DetailTarget: b.Target, DetailSubject: b.Subject}),
		ev(KindRestored, "", t0, "b", map[string]string{DetailTarget: b.Target, DetailSubject: b.Subject}),
	}
	o = NewOpen(OpenFromHistory(hist), 1)
	if ch := o.Update(t0, []Breach{a}); len(ch.Started)+len(ch.Cleared) != 0 {
		t.Fatalf("after a leader change: %+v", ch)
	}
	if ch := o.Update(t0, nil); len(ch.Cleared) != 1 || !ch.Cleared[0].Since.Equal(t0) {
		t.Fatalf("clear after a leader change: %+v", ch)
	}
	// Bounded.
	var many []Breach
	for i := range MaxOpen + 10 {
		many = append(many, Breach{Target: TargetArchiveRPO, Subject: string(rune('a'+i%26)) + string(rune('a'+i/26))})
	}
	if ch := o.Update(t0, many); len(ch.Started) != MaxOpen || len(o.List()) != MaxOpen {
		t.Fatalf("started %d, open %d, want %d", len(ch.Started), len(o.List()), MaxOpen)
	}
}

// TestOpenFlapping: a value hovering at its target clears only after
// ClearAfter decisions in a row without it, so a flap is one episode.
func TestOpenFlapping(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := Breach{Target: TargetArchiveRPO, Subject: "local"}
	o := NewOpen(nil, ClearAfter)
	var started, cleared int
	for i, in := range []bool{true, false, true, false, false, true, false, false, false, false} {
		var decided []Breach
		if in {
			decided = []Breach{a}
		}
		ch := o.Update(t0.Add(time.Duration(i)*time.Second), decided)
		started += len(ch.Started)
		cleared += len(ch.Cleared)
		if i == 8 && cleared != 1 {
			t.Fatalf("not cleared after %d decisions without it", ClearAfter)
		}
	}
	if started != 1 || cleared != 1 {
		t.Fatalf("started %d, cleared %d; want one episode", started, cleared)
	}
}

// TestOpenKeptWhileNotMeasured: a breach clears only on measurements
// within the target. While its target is not measured (the primary stopped
// reporting — it is down, or its agent has not reconnected to a new
// leader yet), no "restored" is announced, however long; once measured
// again within the target it clears after ClearAfter decisions.
func TestOpenKeptWhileNotMeasured(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := Breach{Target: TargetArchiveRPO, Subject: "local"}
	o := NewOpen(nil, ClearAfter)
	if ch := o.Update(t0, []Breach{a}); len(ch.Started) != 1 {
		t.Fatalf("not started: %+v", ch)
	}
	unmeasured := Measured{Drill: Duration{Recorded: true}} // no fresh report: no archive RPO
	for i := range 10 {
		if ch := o.UpdateMeasured(t0.Add(time.Duration(i+1)*time.Second), nil, unmeasured.Measures); len(ch.Cleared) != 0 {
			t.Fatalf("cleared after %d decisions without a measurement of its target", i+1)
		}
	}
	measured := Measured{ArchiveRPO: []RepoRPO{{Repo: "local"}}}
	cleared := 0
	for i := range ClearAfter {
		cleared += len(o.UpdateMeasured(t0.Add(time.Minute+time.Duration(i)*time.Second), nil, measured.Measures).Cleared)
	}
	if cleared != 1 {
		t.Fatalf("cleared %d times after %d measurements within the target, want 1", cleared, ClearAfter)
	}
}

// TestFailoverRPOBreachFollowsTheCandidate: the failover RPO's subject is
// the best candidate, which changes as two replicas overtake each other;
// one breach lasting while the candidate changes is one episode (one
// start, no clear), its subject the current candidate.
func TestFailoverRPOBreachFollowsTheCandidate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := func(cand string) Measured {
		return Measured{FailoverRPO: FailoverRPO{Known: true, Candidate: cand, Seconds: 100}}
	}
	tight := Targets{RPO: time.Second}
	o := NewOpen(nil, ClearAfter)
	var started, cleared int
	for i := range 40 {
		cand := []string{"pg-b", "pg-c"}[i/5%2]
		mm := m(cand)
		ch := o.UpdateMeasured(t0.Add(time.Duration(i)*time.Second), Decide(tight, mm), mm.Measures)
		started += len(ch.Started)
		cleared += len(ch.Cleared)
	}
	if started != 1 || cleared != 0 {
		t.Fatalf("started %d, cleared %d while the best candidate alternated; want one start, no clear", started, cleared)
	}
	if l := o.List(); len(l) != 1 || l[0].Subject != "pg-c" {
		t.Fatalf("open %+v, want one breach of the current candidate pg-c", l)
	}
}
