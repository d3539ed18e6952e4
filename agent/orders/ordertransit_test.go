package orders

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/leaderclock"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestOrderDeadlineTransit: adversarial review of D8, findings 1a and 2.
// With a measurement of the leader's clock, the time an order spent
// between its sending and its receipt (in a socket buffer, on a stalled
// connection, behind a full receive queue) is taken off its budget,
// whatever the agent's wall clock says; the budget is never lengthened.
func TestOrderDeadlineTransit(t *testing.T) {
	sent := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC) // the leader's clock at sending
	base := time.Now()                                   // the agent's clock, with its monotonic reading
	for _, c := range []struct {
		name     string
		offset   time.Duration // the agent's clock minus the leader's
		transit  time.Duration
		measured time.Duration // how long before the receipt the leader's clock was measured
		rtt      time.Duration // the measuring call's round trip
		budget   time.Duration
		wantLeft time.Duration
	}{
		{name: "in sync, no transit", budget: time.Minute, wantLeft: time.Minute},
		{name: "agent 120s behind, 70s in transit: expired", offset: -120 * time.Second, transit: 70 * time.Second, measured: 5 * time.Second, budget: time.Minute, wantLeft: -10 * time.Second},
		{name: "agent 120s ahead, 2s in transit, 200ms round trip", offset: 120 * time.Second, transit: 2 * time.Second, rtt: 200 * time.Millisecond, budget: time.Minute, wantLeft: 57900 * time.Millisecond},
		{name: "frozen agent, measured an hour before", transit: 70 * time.Second, measured: time.Hour, budget: time.Minute, wantLeft: -10 * time.Second},
		{name: "stamped late behind a full queue", offset: 30 * time.Second, transit: 10 * time.Second, measured: time.Second, budget: time.Minute, wantLeft: 50 * time.Second},
		{name: "a measurement that puts the receipt before the sending adds nothing", offset: 3 * time.Second, transit: -2 * time.Second, budget: time.Minute, wantLeft: time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := &pgdrv1.AgentCommand{Id: "x", Epoch: 2, IssuedAt: timestamppb.New(sent), SentAt: timestamppb.New(sent),
				Deadline: timestamppb.New(sent.Add(c.budget)), BudgetMs: c.budget.Milliseconds()}
			received := base.Add(c.offset + c.transit) // the agent's clock at receipt
			// The measurement's midpoint, on the agent's clock, and the
			// leader's clock then (read at the midpoint).
			mid := received.Add(-c.measured)
			lc := &leaderclock.Measurement{Local: mid, LocalWall: mid.Round(0), Leader: sent.Add(mid.Sub(base) - c.offset), RTT: c.rtt}
			got := orderDeadline(cmd, received, lc)
			if left := got.Deadline.Sub(received); left != c.wantLeft || !got.Relative {
				t.Fatalf("deadline %s after the receipt (relative %t); want %s", left, got.Relative, c.wantLeft)
			}
			if !got.HasTransit {
				t.Fatalf("no transit time measured")
			}
		})
	}
	// A suspended VM: the agent's monotonic clock stood still while its
	// wall clock (set from the host or NTP on waking) moved on by 100s more.
	// The larger of both elapsed times counts.
	t.Run("suspended: the wall clock moved on, the monotonic one did not", func(t *testing.T) {
		cmd := &pgdrv1.AgentCommand{Id: "x", Epoch: 2, SentAt: timestamppb.New(sent), Deadline: timestamppb.New(sent.Add(time.Minute)), BudgetMs: 60000}
		mid := base.Add(-5 * time.Second) // measured 5s before the receipt by the monotonic clock
		lc := &leaderclock.Measurement{Local: mid, LocalWall: mid.Round(0).Add(-100 * time.Second), Leader: sent.Add(-5 * time.Second)}
		got := orderDeadline(cmd, base, lc)
		if left := got.Deadline.Sub(base); left != -40*time.Second {
			t.Fatalf("deadline %s after the receipt; want -40s (100s in transit by the wall clock)", left)
		}
	})
	// Without a measurement, the budget counts from the receipt.
	cmd := &pgdrv1.AgentCommand{Id: "x", Epoch: 2, SentAt: timestamppb.New(sent), Deadline: timestamppb.New(sent.Add(time.Minute)), BudgetMs: 60000}
	if got := orderDeadline(cmd, base, nil); got.Deadline.Sub(base) != time.Minute || got.HasTransit {
		t.Fatalf("no measurement: %+v; want the whole budget from the receipt", got)
	}
}
