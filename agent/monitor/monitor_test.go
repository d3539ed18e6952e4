package monitor

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakeChecker hands out the reports queued in it, in order.
type fakeChecker struct{ reports []*pgdrv1.HealthReport }

func (c *fakeChecker) Check(context.Context) *pgdrv1.HealthReport {
	r := c.reports[0]
	c.reports = c.reports[1:]
	return r
}

// overlapChecker's first round blocks, once it has said so on entered,
// until release is closed; later rounds return at once. Each round hands
// out the next report queued.
type overlapChecker struct {
	mu      sync.Mutex
	reports []*pgdrv1.HealthReport
	calls   int
	entered chan struct{}
	release chan struct{}
}

func (c *overlapChecker) Check(context.Context) *pgdrv1.HealthReport {
	c.mu.Lock()
	r := c.reports[0]
	c.reports = c.reports[1:]
	c.calls++
	first := c.calls == 1
	c.mu.Unlock()
	if first {
		close(c.entered)
		<-c.release
	}
	return r
}

// TestCheckNowPublishes: a round annotates its report, names the command
// received before it, becomes the latest and is published unless a round
// begun after it (overlapping it: check_now during the loop's round)
// already published its report; every round signals Reported once,
// without blocking when nobody listens.
func TestCheckNowPublishes(t *testing.T) {
	t0 := time.Now()
	slow := &pgdrv1.HealthReport{Time: timestamppb.New(t0)}
	newer := &pgdrv1.HealthReport{Time: timestamppb.New(t0), PostmasterAlive: true}
	var (
		mu        sync.Mutex
		published []*pgdrv1.HealthReport
	)
	c := &overlapChecker{reports: []*pgdrv1.HealthReport{slow, newer}, entered: make(chan struct{}), release: make(chan struct{})}
	m := New(0, Deps{
		Checker:  c,
		Clock:    func() time.Time { return t0 },
		Annotate: func(r *pgdrv1.HealthReport) { r.FailsafePrimary = "pg-a1" },
		Published: func(r *pgdrv1.HealthReport) {
			mu.Lock()
			defer mu.Unlock()
			published = append(published, r)
		},
	})
	if m.Latest() != nil {
		t.Fatal("a report before the first round")
	}
	m.Received("cmd-1", t0.Add(-time.Millisecond))
	m.Received("cmd-2", t0.Add(time.Millisecond))
	done := make(chan *pgdrv1.HealthReport)
	go func() { done <- m.CheckNow(context.Background()) }() // the slow round, begun first
	<-c.entered
	if r := m.CheckNow(context.Background()); r != newer || r.AfterCommandId != "cmd-1" || r.FailsafePrimary != "pg-a1" {
		t.Fatalf("second round: %v", r)
	}
	select {
	case <-m.Reported():
	default:
		t.Fatal("no signal after the round")
	}
	close(c.release)
	if r := <-done; r != slow {
		t.Fatalf("the slow round returned %v", r)
	}
	mu.Lock()
	n := len(published)
	mu.Unlock()
	if m.Latest() != newer || n != 1 {
		t.Fatalf("latest %v, published %d reports, want the report of the round begun last, once", m.Latest(), n)
	}
	// The slow round signalled too; nobody listened to its signal or to
	// this one: must not block.
	c.reports = []*pgdrv1.HealthReport{{Time: timestamppb.New(t0)}}
	m.CheckNow(context.Background())
}

// TestCheckNowWallClockStepBack: review 12. Rounds are ordered by when
// they began, not by the wall time in their reports: after the wall clock
// steps back an hour, the next round's report (stamped an hour earlier
// than the last) is still the newer one and must be published, or the
// lease loop and /primary act on the stale report for that hour.
func TestCheckNowWallClockStepBack(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC) // no monotonic reading
	before := &pgdrv1.HealthReport{Time: timestamppb.New(t0), PostmasterAlive: true}
	after := &pgdrv1.HealthReport{Time: timestamppb.New(t0.Add(-time.Hour))} // PostgreSQL died
	clock := []time.Time{t0, t0.Add(-time.Hour)}
	var published []*pgdrv1.HealthReport
	m := New(0, Deps{
		Checker: &fakeChecker{reports: []*pgdrv1.HealthReport{before, after}},
		Clock: func() time.Time {
			now := clock[0]
			clock = clock[1:]
			return now
		},
		Published: func(r *pgdrv1.HealthReport) { published = append(published, r) },
	})
	m.CheckNow(context.Background())
	m.CheckNow(context.Background())
	if m.Latest() != after || len(published) != 2 {
		t.Fatalf("after the wall clock stepped back: latest %v, published %d reports, want the second round's report published", m.Latest(), len(published))
	}
}

// TestCheckNowEchoesOnlyEarlierCommands: a round of checks names the
// command received before it began, not one that arrives (on the same
// clock) once it has begun, even if noted before the round ends.
func TestCheckNowEchoesOnlyEarlierCommands(t *testing.T) {
	base := time.Now()
	var now func() time.Time
	m := New(0, Deps{
		Checker: &fakeChecker{reports: []*pgdrv1.HealthReport{
			{Time: timestamppb.New(base)}, {Time: timestamppb.New(base.Add(time.Second))},
		}},
		Clock: func() time.Time { return now() },
	})
	m.Received("before", base.Add(-time.Second))
	now = func() time.Time {
		// A command arrives as the round begins, stamped just after.
		m.Received("during", base.Add(time.Millisecond))
		return base
	}
	if r := m.CheckNow(context.Background()); r.AfterCommandId != "before" {
		t.Fatalf("the round names %q, want %q (received before it began)", r.AfterCommandId, "before")
	}
	if r := m.Latest(); r.AfterCommandId != "before" {
		t.Fatalf("the published report names %q", r.AfterCommandId)
	}
	now = func() time.Time { return base.Add(time.Second) }
	if r := m.CheckNow(context.Background()); r.AfterCommandId != "during" {
		t.Fatalf("the next round names %q, want %q", r.AfterCommandId, "during")
	}
}

// TestLatestAgeIgnoresWallTime: a report's age (the probes' staleness) is
// counted on the monitor's clock from when its round began, not from the
// wall time in the report: after the wall clock steps back an hour, a
// report from a round begun an hour ago (the checks hung since) reads an
// hour old, and a fresh round's report stamped in the "future" reads fresh.
func TestLatestAgeIgnoresWallTime(t *testing.T) {
	t0 := time.Now()
	now := t0
	m := New(0, Deps{
		// The report is stamped by the wall clock an hour behind (stepped
		// back after the round began).
		Checker: &fakeChecker{reports: []*pgdrv1.HealthReport{{Time: timestamppb.New(t0.Add(time.Hour))}, {Time: timestamppb.New(t0.Add(-time.Hour))}}},
		Clock:   func() time.Time { return now },
	})
	if r, age := m.LatestAge(); r != nil || age != 0 {
		t.Fatalf("before the first round: %v, %s", r, age)
	}
	m.CheckNow(context.Background())
	now = t0.Add(time.Hour)
	if _, age := m.LatestAge(); age != time.Hour {
		t.Fatalf("a round begun an hour ago by the monitor's clock, its report stamped an hour ahead: age %s, want 1h", age)
	}
	m.CheckNow(context.Background())
	if _, age := m.LatestAge(); age != 0 {
		t.Fatalf("a round begun now, its report stamped an hour back: age %s, want 0", age)
	}
}
