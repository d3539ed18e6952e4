package orders

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestOrderDeadline: review D8, the deadline computation. With a budget the
// agent's deadline is its receipt time + the budget, whatever the clocks'
// offset; without one (an older coordinator) it is the leader's absolute
// deadline, as before. pg_promote's wait ends before the earlier of the
// local deadline and the leader's, the latter less the Epoch call's
// round trip.
func TestOrderDeadline(t *testing.T) {
	leader := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC) // the leader's clock at sending
	for _, c := range []struct {
		name       string
		offset     time.Duration // the agent's clock minus the leader's
		transit    time.Duration
		deadline   time.Duration // after sending, on the leader's clock (0: none)
		budget     bool          // the order carries sent_at and budget_ms
		wantLeft   time.Duration // deadline minus receipt on the agent's clock
		wantNone   bool
		wantSkew   time.Duration
		wantRelate bool
	}{
		{name: "no deadline", budget: true, wantNone: true},
		{name: "no deadline, older coordinator", wantNone: true},
		{name: "in sync", deadline: time.Minute, budget: true, wantLeft: time.Minute, wantRelate: true},
		{name: "agent 120s ahead", offset: 120 * time.Second, deadline: time.Minute, budget: true, wantLeft: time.Minute, wantSkew: 120 * time.Second, wantRelate: true},
		{name: "agent 120s behind", offset: -120 * time.Second, deadline: time.Minute, budget: true, wantLeft: time.Minute, wantSkew: -120 * time.Second, wantRelate: true},
		{name: "transit counts as skew, not as budget", transit: 2 * time.Second, deadline: time.Minute, budget: true, wantLeft: time.Minute, wantSkew: 2 * time.Second, wantRelate: true},
		{name: "expired when sent", deadline: -time.Second, budget: true, wantLeft: -time.Second, wantRelate: true},
		{name: "older coordinator, agent 120s ahead: already past", offset: 120 * time.Second, deadline: time.Minute, wantLeft: -time.Minute},
		{name: "older coordinator, agent 120s behind: 3 minutes", offset: -120 * time.Second, deadline: time.Minute, wantLeft: 3 * time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := &pgdrv1.AgentCommand{Id: "x", Epoch: 2, IssuedAt: timestamppb.New(leader)}
			if c.deadline != 0 {
				cmd.Deadline = timestamppb.New(leader.Add(c.deadline))
			}
			if c.budget {
				cmd.SentAt = timestamppb.New(leader)
				if c.deadline != 0 {
					cmd.BudgetMs = c.deadline.Milliseconds()
				}
			}
			received := leader.Add(c.offset + c.transit)
			got := orderDeadline(cmd, received, nil)
			if c.wantNone {
				if !got.Deadline.IsZero() || !got.Leader.IsZero() {
					t.Fatalf("an order without a deadline got %+v", got)
				}
				return
			}
			if left := got.Deadline.Sub(received); left != c.wantLeft || got.Relative != c.wantRelate {
				t.Fatalf("deadline %s after the receipt (relative %t); want %s (relative %t)", left, got.Relative, c.wantLeft, c.wantRelate)
			}
			if !got.Leader.Equal(leader.Add(c.deadline)) {
				t.Fatalf("leader deadline %v; want %v", got.Leader, leader.Add(c.deadline))
			}
			if got.HasSkew != c.budget || got.Skew != c.wantSkew {
				t.Fatalf("skew %s (known %t); want %s (known %t)", got.Skew, got.HasSkew, c.wantSkew, c.budget)
			}
		})
	}

	for _, c := range []struct {
		name     string
		left     time.Duration
		ok       bool
		wantWait time.Duration
		wantLate bool
	}{
		{"no deadline", 0, false, promoteWait, false},
		{"plenty", 10 * time.Minute, true, promoteWait, false},
		{"60s: ends 5s before", time.Minute, true, 55 * time.Second, false},
		{"8s: ends a quarter before", 8 * time.Second, true, 6 * time.Second, false},
		{"1.2s: too late", 1200 * time.Millisecond, true, 900 * time.Millisecond, true},
		{"past", -time.Second, true, -time.Second + 250*time.Millisecond, true},
	} {
		t.Run("wait/"+c.name, func(t *testing.T) {
			w, late := promoteWaitFor(c.left, c.ok)
			if w != c.wantWait || late != c.wantLate {
				t.Fatalf("promoteWaitFor(%s, %t) = %s, %t; want %s, %t", c.left, c.ok, w, late, c.wantWait, c.wantLate)
			}
		})
	}

	dl := leader.Add(time.Minute)
	for _, c := range []struct {
		name      string
		deadline  time.Time
		leaderNow time.Time
		rtt       time.Duration
		want      time.Duration
		ok        bool
	}{
		{"older coordinator: no clock", dl, time.Time{}, time.Millisecond, 0, false},
		{"no deadline", time.Time{}, leader, time.Millisecond, 0, false},
		{"the round trip counts against it", dl, leader.Add(10 * time.Second), 300 * time.Millisecond, 49700 * time.Millisecond, true},
		{"past on the leader's clock", dl, leader.Add(61 * time.Second), 0, -time.Second, true},
	} {
		t.Run("leader/"+c.name, func(t *testing.T) {
			got, ok := leaderLeft(c.deadline, c.leaderNow, c.rtt)
			if got != c.want || ok != c.ok {
				t.Fatalf("leaderLeft = %s, %t; want %s, %t", got, ok, c.want, c.ok)
			}
		})
	}
}
