package monitor

import (
	"context"
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

// TestCheckNowPublishes: a round annotates its report, names the command
// received before it, becomes the latest and is published unless an
// overlapping round already published a newer one; every round signals
// Reported once, without blocking when nobody listens.
func TestCheckNowPublishes(t *testing.T) {
	t0 := time.Now()
	newer := &pgdrv1.HealthReport{Time: timestamppb.New(t0), PostmasterAlive: true}
	older := &pgdrv1.HealthReport{Time: timestamppb.New(t0.Add(-time.Second))}
	var published []*pgdrv1.HealthReport
	m := New(0, Deps{
		Checker:   &fakeChecker{reports: []*pgdrv1.HealthReport{newer, older, older}},
		Clock:     func() time.Time { return t0 },
		Annotate:  func(r *pgdrv1.HealthReport) { r.FailsafePrimary = "pg-a1" },
		Published: func(r *pgdrv1.HealthReport) { published = append(published, r) },
	})
	if m.Latest() != nil {
		t.Fatal("a report before the first round")
	}
	m.Received("cmd-1", t0.Add(-time.Millisecond))
	m.Received("cmd-2", t0.Add(time.Millisecond))
	if r := m.CheckNow(context.Background()); r != newer || r.AfterCommandId != "cmd-1" || r.FailsafePrimary != "pg-a1" {
		t.Fatalf("first round: %v", r)
	}
	select {
	case <-m.Reported():
	default:
		t.Fatal("no signal after the round")
	}
	m.CheckNow(context.Background()) // an overlapping round's older report
	m.CheckNow(context.Background()) // no one listening: must not block
	if m.Latest() != newer || len(published) != 1 {
		t.Fatalf("latest %v, published %d reports, want the newer one once", m.Latest(), len(published))
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
