package slo

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestMissing(t *testing.T) {
	for _, c := range []struct {
		name     string
		gap      time.Duration
		interval time.Duration
		want     int
	}{
		{"#1 next heartbeat one interval later", time.Second, time.Second, 0},
		{"#2 one sample skipped by the health round", 2 * time.Second, time.Second, 0},
		{"#3 a jittery skipped sample", 2400 * time.Millisecond, time.Second, 0},
		{"#4 a 10 s outage (gap of about 11.5 s)", 11500 * time.Millisecond, time.Second, 10},
		{"#5 5 s interval, one interval apart", 5 * time.Second, 5 * time.Second, 0},
		{"#6 5 s interval, a 30 s gap", 30 * time.Second, 5 * time.Second, 22},
		{"#7 no interval known: 1 s", 4 * time.Second, 0, 2},
	} {
		if got := Missing(c.gap, c.interval); got != c.want {
			t.Errorf("%s: Missing(%s, %s) = %d, want %d", c.name, c.gap, c.interval, got, c.want)
		}
	}
}

// TestJudge walks one cluster through seconds: every step is one tick of
// the leader, with the newest heartbeat known then.
func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type step struct {
		now, newest float64 // seconds after t0; newest < 0: none known
		want        Verdict
	}
	for _, c := range []struct {
		name  string
		steps []step
		good  int
		bad   int
	}{
		{name: "#1 heartbeats every second: all good", steps: []step{
			{1, 0.5, Verdict{Good: 1}}, {2, 1.5, Verdict{Good: 1}}, {3, 2.5, Verdict{Good: 1}}, {4, 2.5, Verdict{Good: 1}}, {5, 4.5, Verdict{Good: 1}},
		}, good: 5},
		{name: "#2 first heartbeat known is stale: bad", steps: []step{
			{10, 1, Verdict{Bad: 1}}, {11, 1, Verdict{Bad: 1}},
		}, bad: 2},
		{name: "#3 a 6 s write gap, provisional then corrected", steps: []step{
			{1, 0.9, Verdict{Good: 1}},
			{2, 0.9, Verdict{Good: 1}},
			{3, 0.9, Verdict{Good: 1}}, // 2.1 s old: within 2*1s+1s
			{4, 0.9, Verdict{Bad: 1}},  // 3.1 s
			{5, 0.9, Verdict{Bad: 1}},
			{6, 0.9, Verdict{Bad: 1}},
			{7, 0.9, Verdict{Bad: 1}},
			// next commit at 7.9: gap 7 s, missing floor(7-1.5) = 5, 4 counted: 1 more bad, this second 0 good
			{8, 7.9, Verdict{Good: 0, Bad: 1}},
			{9, 8.9, Verdict{Good: 1}},
		}, good: 4, bad: 5},
		{name: "#4 gap shorter than the allowance still counts once known", steps: []step{
			{1, 0.9, Verdict{Good: 1}},
			{2, 0.9, Verdict{Good: 1}},
			{3, 0.9, Verdict{Good: 1}},
			{4, 3.9, Verdict{Good: 0, Bad: 1}}, // gap 3 s: 1 missing second
		}, good: 3, bad: 1},
		{name: "#5 no heartbeat known: bad", steps: []step{
			{1, -1, Verdict{Bad: 1}},
		}, bad: 1},
		{name: "#6 a long outage overcounted provisionally is given back", steps: []step{
			{1, 0.9, Verdict{Good: 1}},
			{2, 0.9, Verdict{Good: 1}},
			{3, 0.9, Verdict{Good: 1}},
			{4, 0.9, Verdict{Bad: 1}},
			{5, 0.9, Verdict{Bad: 1}},
			// a report late by seconds: the commit at 2.9 ended a 2 s gap (0 missing)
			{6, 2.9, Verdict{Good: 3, Bad: -2}},
		}, good: 6, bad: 0},
		{name: "#7 a leader starting mid-outage corrects only the seconds it judged", steps: []step{
			{100, 40, Verdict{Bad: 1}}, // the newest known is 60 s old: the 60 s before were no leader's
			{101, 40, Verdict{Bad: 1}},
			{102, 40, Verdict{Bad: 1}},
			// writes back at 102.5: from 100-3 = 97 the gap is 5.5 s, 4 missing, 3 counted
			{103, 102.5, Verdict{Good: 0, Bad: 1}},
			{104, 103.5, Verdict{Good: 1}},
		}, good: 1, bad: 4},
	} {
		var tr Tracker
		good, bad := 0, 0
		for i, s := range c.steps {
			var newest time.Time
			if s.newest >= 0 {
				newest = at(s.newest)
			}
			var v Verdict
			tr, v = Judge(tr, newest, at(s.now), time.Second)
			if v != s.want {
				t.Errorf("%s: step %d (now %.1f, newest %.1f): %+v, want %+v", c.name, i, s.now, s.newest, v, s.want)
			}
			if v.Good+v.Bad != 1 {
				t.Errorf("%s: step %d: verdict %+v does not count exactly one second", c.name, i, v)
			}
			good, bad = good+v.Good, bad+v.Bad
		}
		if good != c.good || bad != c.bad {
			t.Errorf("%s: good %d bad %d, want %d and %d", c.name, good, bad, c.good, c.bad)
		}
	}
}

func TestApplyBuckets(t *testing.T) {
	h := int64(3600)
	base := int64(490000) * h // an hour boundary
	for _, c := range []struct {
		name       string
		batches    [][3]int64 // from, to, first; good = judged seconds, bad 0
		runSince   int64      // of the last batch
		good, bad  uint64
		unobserved uint64
		buckets    int
		through    int64
	}{
		{name: "#1 one minute judged", batches: [][3]int64{{base, base + 60, base}}, good: 60, buckets: 1, through: base + 60},
		{name: "#2 two minutes in a row: no gap", batches: [][3]int64{{base, base + 60, base}, {base + 60, base + 120, base + 60}}, good: 120, buckets: 1, through: base + 120},
		{name: "#3 a new leader starts 90 s later: 90 s unobserved", batches: [][3]int64{{base, base + 60, base}, {base + 120, base + 180, base + 150}},
			good: 60 + 30, bad: 90, unobserved: 90, buckets: 1, through: base + 180},
		{name: "#4 a late batch of a deposed leader changes nothing", batches: [][3]int64{{base + 60, base + 120, base + 60}, {base, base + 60, base}},
			good: 60, buckets: 1, through: base + 120},
		{name: "#5 gap across an hour boundary", batches: [][3]int64{{base, base + 60, base}, {base + h + 60, base + h + 120, base + h + 60}},
			good: 120, bad: uint64(h), unobserved: uint64(h), buckets: 2, through: base + h + 120},
		{name: "#7 a new leader 90 s later, heartbeats unbroken for the last 60 s of the gap: 30 s unobserved",
			batches: [][3]int64{{base, base + 60, base}, {base + 120, base + 180, base + 150}}, runSince: base + 90,
			good: 60 + 60 + 30, bad: 30, unobserved: 30, buckets: 1, through: base + 180},
		{name: "#8 heartbeats unbroken since before the gap: none unobserved",
			batches: [][3]int64{{base, base + 60, base}, {base + 120, base + 180, base + 150}}, runSince: base - 600,
			good: 60 + 90 + 30, buckets: 1, through: base + 180},
		{name: "#9 a batch overlapping the recorded one (a deposed leader's stalled tick ended its batch at 51 s; the new leader judged from 30 s): no second counted twice",
			batches: [][3]int64{{base, base + 51, base}, {base, base + 60, base + 30}},
			good:    60, buckets: 1, through: base + 60},
		{name: "#6 29 days later: the gap is clamped to the window, buckets stay bounded", batches: [][3]int64{{base, base + 60, base}, {base + 29*24*h, base + 29*24*h + 60, base + 29*24*h}},
			good: 120, bad: uint64(28 * 24 * h), unobserved: uint64(28 * 24 * h), buckets: Buckets, through: base + 29*24*h + 60},
	} {
		var ws *pgdrv1.WriteSeconds
		for i, b := range c.batches {
			batch := Batch{Good: uint32(b[1] - max(b[2], b[0])), First: b[2]}
			if i == len(c.batches)-1 {
				batch.RunSince = c.runSince
			}
			ws = Apply(ws, b[0], b[1], batch)
		}
		if ws.GoodTotal != c.good || ws.BadTotal != c.bad || ws.UnobservedTotal != c.unobserved {
			t.Errorf("%s: totals good %d bad %d unobserved %d, want %d %d %d", c.name, ws.GoodTotal, ws.BadTotal, ws.UnobservedTotal, c.good, c.bad, c.unobserved)
		}
		if len(ws.Good) != c.buckets || len(ws.Bad) != c.buckets || len(ws.Unobserved) != c.buckets {
			t.Errorf("%s: %d/%d/%d buckets, want %d", c.name, len(ws.Good), len(ws.Bad), len(ws.Unobserved), c.buckets)
		}
		if ws.ThroughUnix != c.through {
			t.Errorf("%s: through %d, want %d", c.name, ws.ThroughUnix, c.through)
		}
		s := Sum(ws, time.Unix(ws.ThroughUnix-1, 0))
		if c.name[:2] != "#6" && (s.Good != c.good || s.Bad != c.bad) {
			t.Errorf("%s: window sums %+v, want good %d bad %d", c.name, s, c.good, c.bad)
		}
	}
}

func TestApplyLeavesInputOfRejectedBatchAlone(t *testing.T) {
	ws := Apply(nil, 3600, 3660, Batch{Good: 60, First: 3600})
	before := proto.Clone(ws)
	Apply(ws, 3600, 3600, Batch{Good: 5})
	if !proto.Equal(before, ws) {
		t.Errorf("an empty batch changed the state: %v -> %v", before, ws)
	}
}

func TestSumDropsHoursOutsideTheWindow(t *testing.T) {
	h := int64(3600)
	ws := Apply(nil, 100*h, 100*h+60, Batch{Good: 60, First: 100 * h})
	if s := Sum(ws, time.Unix(100*h+int64(Buckets)*h, 0)); s.Good != 0 {
		t.Errorf("a bucket 28 days old still counted: %+v", s)
	}
	if s := Sum(ws, time.Unix(100*h+int64(Buckets-1)*h, 0)); s.Good != 60 {
		t.Errorf("the window's oldest bucket not counted: %+v", s)
	}
}

func TestBudget(t *testing.T) {
	window := Window.Seconds()
	for _, c := range []struct {
		name        string
		s           Sums
		target      float64
		ratio, left float64
	}{
		{"#1 nothing judged", Sums{}, 0.9999, 1, 1},
		{"#2 all good", Sums{Good: 1000}, 0.9999, 1, 1},
		{"#3 a 60 s outage at 99.99% over 28 days spends 60/241.92 of the budget", Sums{Good: uint64(window) - 60, Bad: 60}, 0.9999, 1 - 60/window, 1 - 60/(0.0001*window)},
		{"#4 overspent", Sums{Good: 1000, Bad: 500}, 0.9999, 1000.0 / 1500, 1 - 500/(0.0001*window)},
		{"#5 target 100%: any bad second is overspent", Sums{Good: 10, Bad: 2}, 1, 10.0 / 12, -2},
	} {
		r, l := Budget(c.s, c.target)
		if math.Abs(r-c.ratio) > 1e-12 || math.Abs(l-c.left) > 1e-9 {
			t.Errorf("%s: Budget = %v, %v; want %v, %v", c.name, r, l, c.ratio, c.left)
		}
	}
}
