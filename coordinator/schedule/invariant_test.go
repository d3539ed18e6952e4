package schedule

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/policy"
)

// TestInvariant9 is invariant 9 of ARCHITECTURE.md on random histories:
// a scheduled tier runs at most once per slot and never concurrently with
// another backup of its cluster, and after any outage of the scheduler
// (a dead leader, a partition, a stopped coordinator) the missed slots of
// a tier produce one catch-up run. Each seed simulates about an hour of
// second-level schedules with scheduler outages of up to five minutes,
// agents that finish, fail or never answer, members that go unhealthy,
// and operators' manual runs; the recorded runs are then checked.
func TestInvariant9(t *testing.T) {
	p := tiers(
		policy.Tier{Name: "full", Type: policy.TypeFull, Schedule: "*/20 * * * * *", KeepCount: 5, Timeout: 15 * time.Second},
		policy.Tier{Name: "diff", Type: policy.TypeDiff, Schedule: "*/7 * * * * *", KeepCount: 5, Timeout: 5 * time.Second},
		policy.Tier{Name: "incr", Type: policy.TypeIncr, Schedule: "*/3 * * * * *", KeepCount: 5, Timeout: 4 * time.Second, RunOn: policy.RunOnStandbyOnly},
		policy.Tier{Name: "prim", Type: policy.TypeIncr, Schedule: "30 * * * * *", KeepCount: 5, Timeout: 10 * time.Second, RunOn: policy.RunOnPrimary},
	)
	seeds := int64(24)
	if testing.Short() {
		seeds = 6
	}
	for seed := int64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { simulate(t, p, seed) })
	}
}

type outage struct{ from, to time.Time }

func simulate(t *testing.T, p policy.Policy, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	start := at("2026-05-01 00:00:00")
	end := start.Add(time.Hour)
	quiet := end.Add(-2 * time.Minute) // no outage, all healthy: everything catches up
	var runs []Run
	var outages []outage
	// answers: when the agent's result for a run arrives (absent: never).
	answers := map[string]time.Time{}
	results := map[string]string{}
	down := time.Time{}
	members := healthy()
	grace := time.Duration(rng.Intn(3)) * time.Second
	n := 0
	for now := start; now.Before(end); now = now.Add(time.Duration(200+rng.Intn(1300)) * time.Millisecond) {
		// Agents answer whenever a leader is up to hear them; while none
		// is, the answer is lost and the run times out.
		for i := range runs {
			r := &runs[i]
			if a, ok := answers[r.ID]; ok && !Finished(r.Result) && !now.Before(a) {
				delete(answers, r.ID)
				if down.IsZero() {
					r.Result, r.Finished = results[r.ID], now
				}
			}
		}
		if now.Before(quiet) {
			switch {
			case down.IsZero() && rng.Intn(150) == 0:
				down = now
			case !down.IsZero() && now.Sub(down) > time.Duration(rng.Intn(300))*time.Second:
				outages = append(outages, outage{down, now})
				down = time.Time{}
			}
			if rng.Intn(40) == 0 {
				m := &members[rng.Intn(len(members))]
				m.Healthy = !m.Healthy
			}
		} else {
			if !down.IsZero() {
				outages = append(outages, outage{down, now})
				down = time.Time{}
			}
			members = healthy()
		}
		if !down.IsZero() {
			continue
		}
		in := Input{Now: now, Policy: p, Runs: runs, Members: members, Primary: "pg-1", Grace: grace, Since: start}
		var d Decision
		if rng.Intn(60) == 0 {
			var err error
			if d, err = Manual(in, p.Tiers[rng.Intn(len(p.Tiers))].Name); err != nil {
				continue
			}
		} else {
			d = Decide(in)
		}
		switch d.Action {
		case Start, Skip:
			n++
			r := Run{ID: fmt.Sprint("r", n), Tier: d.Tier, Type: d.Type, Node: d.Node, Slot: d.Slot, Started: now, Timeout: d.Timeout}
			if d.Action == Skip {
				r.Result, r.Finished = ResultSkipped, now
			} else {
				took := time.Duration(rng.Intn(int(d.Timeout/time.Millisecond)*3/2)) * time.Millisecond
				if rng.Intn(10) > 0 {
					answers[r.ID] = now.Add(took)
					results[r.ID] = []string{ResultOK, ResultOK, ResultFailed}[rng.Intn(3)]
				}
			}
			runs = append(runs, r)
		case Cancel:
			i := slices.IndexFunc(runs, func(r Run) bool { return r.ID == d.RunID })
			if i < 0 || Finished(runs[i].Result) {
				t.Fatalf("%s: cancels %s, which is not in flight", now, d.RunID)
			}
			if now.Before(runs[i].Started.Add(runs[i].Timeout)) {
				t.Fatalf("%s: cancels %s before its timeout", now, d.RunID)
			}
			runs[i].Result, runs[i].Finished = ResultTimeout, now
		}
		if fl := inFlight(runs); len(fl) > 1 {
			t.Fatalf("%s: %d runs in flight: %v", now, len(fl), fl)
		}
	}
	// Never concurrent: the intervals [start, finish) of the runs made are
	// disjoint (skips take no time).
	for i, a := range runs {
		for _, b := range runs[i+1:] {
			if a.Result == ResultSkipped || b.Result == ResultSkipped || !Finished(a.Result) {
				continue
			}
			if b.Started.Before(a.Finished) {
				t.Fatalf("%s (%s..%s) and %s (started %s) overlap", a.ID, a.Started, a.Finished, b.ID, b.Started)
			}
		}
	}
	for _, tier := range p.Tiers {
		var prev *Run
		scheduled := 0
		for i := range runs {
			r := &runs[i]
			if r.Tier != tier.Name {
				continue
			}
			if !r.Slot.IsZero() {
				scheduled++
				// At most once per slot: the slot a run makes is due (not
				// after its start) and lies after the tier's previous run
				// started, so no slot is made twice and between two runs of
				// a tier there is always at least one slot, however long
				// the outage before.
				if r.Slot.After(r.Started) {
					t.Fatalf("%s of %s makes slot %s before it is due (started %s)", r.ID, tier.Name, r.Slot, r.Started)
				}
				if prev != nil && !r.Slot.After(prev.Started) {
					t.Fatalf("%s of %s makes slot %s, not after the previous run %s started (%s)", r.ID, tier.Name, r.Slot, prev.ID, prev.Started)
				}
			}
			prev = r
		}
		// One catch-up run after each outage: at most one run of the tier
		// starts between the outage's end and the tier's first slot after it.
		for _, o := range outages {
			next, err := tier.NextRun(o.to)
			if err != nil {
				t.Fatal(err)
			}
			k := 0
			for _, r := range runs {
				if r.Tier == tier.Name && !r.Slot.IsZero() && !r.Started.Before(o.to) && r.Started.Before(next) {
					k++
				}
			}
			if k > 1 {
				t.Fatalf("tier %s: %d runs after the outage %s..%s before its next slot %s", tier.Name, k, o.from, o.to, next)
			}
		}
		// And the tier is not starved: once all is quiet and healthy, it runs.
		ranLate := slices.ContainsFunc(runs, func(r Run) bool { return r.Tier == tier.Name && r.Started.After(quiet.Add(30*time.Second)) })
		if !ranLate {
			t.Fatalf("tier %s never ran in the last 90 seconds of quiet (%d scheduled runs in all)", tier.Name, scheduled)
		}
	}
	if len(outages) == 0 {
		t.Logf("seed without an outage")
	}
}
