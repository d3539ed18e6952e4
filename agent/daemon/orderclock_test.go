package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// budgetOrder is a promote order as a leader of today sends it: sent at
// sent on the leader's clock, with budget left before its deadline.
func budgetOrder(epoch uint64, sent time.Time, budget time.Duration) *pgdrv1.AgentCommand {
	c := promoteOrder(epoch, sent, sent.Add(budget))
	c.SentAt = timestamppb.New(sent)
	c.BudgetMs = budget.Milliseconds()
	return c
}

// TestOrderClockSkew: review D8. An order's deadline is the leader's; the
// agent's wall clock, ahead of or behind the leader's, must not decide
// whether an order is still current. The agent counts the order's budget
// from when it received it on its own monotonic clock, and right before
// pg_promote it checks the deadline on the leader's clock (the Epoch
// answer's).
func TestOrderClockSkew(t *testing.T) {
	ctx := context.Background()
	leaderNow := time.Now // the leader's clock: the real one
	t.Run("agent clock 120s ahead accepts a fresh order", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		d, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow})
		d.now = func() time.Time { return time.Now().Add(120 * time.Second) }
		res := c.carryOut(ctx, budgetOrder(6, leaderNow(), time.Minute))
		if !res.Ok || fp.calls() != 1 {
			t.Fatalf("a fresh order (60s budget) to an agent whose clock is 120s ahead: %+v (pg_promote called %d times)", res, fp.calls())
		}
		// The skew is measured (and shown in the metrics).
		if s, ok := d.lclock.Skew(); !ok || s < 119*time.Second || s > 121*time.Second {
			t.Fatalf("measured skew %s (known %t); want about 120s", s, ok)
		}
		mfs, err := d.metrics.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		g := -1.0
		for _, mf := range mfs {
			if mf.GetName() == "pgdr_agent_leader_clock_skew_seconds" && len(mf.GetMetric()) == 1 {
				g = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		if g < 119 || g > 121 {
			t.Fatalf("pgdr_agent_leader_clock_skew_seconds = %g; want about 120", g)
		}
	})
	behind := func() time.Time { return time.Now().Add(-120 * time.Second) }
	t.Run("agent clock 120s behind: an order that waited past its budget is refused", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		d, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow})
		d.now = behind
		// Received 61s ago (it waited behind a long order) with a 60s
		// budget: the leader stopped waiting for it a second ago.
		res := c.carryOutAt(ctx, budgetOrder(6, leaderNow().Add(-61*time.Second), time.Minute), d.clock().Add(-61*time.Second))
		if res.Ok || !strings.Contains(res.Error, "deadline") || fp.calls() != 0 {
			t.Fatalf("an order past its budget on an agent whose clock is 120s behind: %+v (pg_promote called %d times)", res, fp.calls())
		}
	})
	t.Run("agent clock 120s behind: the leader's clock says the deadline passed", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		d, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow})
		d.now = behind
		// Received just now but sent 61s ago (a stalled connection): only
		// the leader's clock shows that its deadline passed.
		res := c.carryOut(ctx, budgetOrder(6, leaderNow().Add(-61*time.Second), time.Minute))
		if res.Ok || !strings.Contains(res.Error, "deadline") || fp.calls() != 0 {
			t.Fatalf("a promote past its deadline on the leader's clock: %+v (pg_promote called %d times)", res, fp.calls())
		}
	})
	t.Run("agent clock 120s behind: pg_promote's wait ends before the leader's deadline", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		d, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow})
		d.now = behind
		// 10s left on the leader's clock, 60s by the local budget.
		res := c.carryOut(ctx, budgetOrder(6, leaderNow().Add(-50*time.Second), time.Minute))
		fp.mu.Lock()
		wait := fp.wait
		fp.mu.Unlock()
		if !res.Ok || fp.calls() != 1 || wait <= 0 || wait > 10*time.Second {
			t.Fatalf("promote with 10s left on the leader's clock: %+v, pg_promote called %d times with wait %s (want at most 10s)", res, fp.calls(), wait)
		}
	})
}

// TestOrderStampedOnArrival: review D8. An order's budget counts from its
// arrival on the command stream, not from when its turn comes: a promote
// with a 3s budget that arrives while another order runs for 6s is
// refused when its turn comes, even on an agent whose clock is 120s
// behind the leader's (so that the leader's absolute deadline, read on
// that clock, would still let it through).
func TestOrderStampedOnArrival(t *testing.T) {
	fc, d := fakeSession(t, func(d *Daemon) {
		d.now = func() time.Time { return time.Now().Add(-120 * time.Second) }
	})
	c2 := fc.coords["c2"]
	c2.cmds <- &pgdrv1.AgentCommand{Id: "ping", Cluster: "main", Node: "pg-a2", Epoch: 5, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	testutil.WaitFor(t, 30*time.Second, "the agent's command stream", func() (bool, error) {
		_, _, res, _, _ := c2.snapshot()
		return len(res) == 1, fmt.Errorf("%d results", len(res))
	})

	release := d.orders.Hold() // the first order runs for 6s
	c2.cmds <- &pgdrv1.AgentCommand{Id: "long", Cluster: "main", Node: "pg-a2", Epoch: 5,
		Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{Reason: "test"}}}
	sent := time.Now()
	late := budgetOrder(5, sent, 3*time.Second)
	late.Id = "queued"
	c2.cmds <- late
	testutil.WaitFor(t, 30*time.Second, "both orders on the stream", func() (bool, error) {
		return len(c2.cmds) == 0, fmt.Errorf("%d not sent", len(c2.cmds))
	})
	time.Sleep(6*time.Second - time.Since(sent))
	release()

	testutil.WaitFor(t, 30*time.Second, "both orders' results", func() (bool, error) {
		_, _, res, _, _ := c2.snapshot()
		return len(res) == 3, fmt.Errorf("%d results", len(res))
	})
	_, _, res, _, _ := c2.snapshot()
	if r := res[2]; r.Id != "queued" || r.Ok || !strings.Contains(r.Error, "deadline") {
		t.Fatalf("an order with a 3s budget that waited 6s behind another: %v", r)
	}
}
