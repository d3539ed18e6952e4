package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// lateOrder is an order of kind sent at sent on the leader's clock with
// budget left before its deadline, as a leader of today stamps it.
func lateOrder(epoch uint64, sent time.Time, budget time.Duration, kind any) *pgdrv1.AgentCommand {
	c := &pgdrv1.AgentCommand{Id: "late", Cluster: "main", Node: "pg-a2", Epoch: epoch, IssuedAt: timestamppb.New(sent),
		Deadline: timestamppb.New(sent.Add(budget)), SentAt: timestamppb.New(sent), BudgetMs: budget.Milliseconds()}
	switch k := kind.(type) {
	case *pgdrv1.AgentCommand_Follow:
		c.Kind = k
	case *pgdrv1.AgentCommand_Restart:
		c.Kind = k
	case *pgdrv1.AgentCommand_SetSynchronous:
		c.Kind = k
	}
	return c
}

// TestOrderTransitBounded: adversarial review of D8, finding 1a. An order
// that spent longer in transit than its budget (an agent frozen with the
// order in its socket buffer, a stalled connection, a full receive
// queue) is refused: the agent knows the leader's clock (measured from a
// call's round trip) and counts the transit against the budget, whatever
// its own wall clock says. Counting the budget from the receipt alone gave
// such an order a full fresh budget.
func TestOrderTransitBounded(t *testing.T) {
	ctx := context.Background()
	leaderNow := time.Now
	follow := &pgdrv1.AgentCommand_Follow{Follow: &pgdrv1.Follow{Primary: "pg-a1", PrimaryDsn: "host=127.0.0.1 port=1 user=postgres"}}
	for _, offset := range []time.Duration{0, 120 * time.Second, -120 * time.Second} {
		t.Run("agent clock offset "+offset.String(), func(t *testing.T) {
			d, c := promoteDaemon(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a1", now: leaderNow})
			d.now = func() time.Time { return time.Now().Add(offset) }
			// Sent 70s ago with a 60s budget, received now.
			res := c.carryOut(ctx, lateOrder(6, leaderNow().Add(-70*time.Second), time.Minute, follow))
			if res.Ok || !strings.Contains(res.Error, "deadline") {
				t.Fatalf("a follow order sent 70s ago with a 60s budget, received now: %+v; want refused (deadline)", res)
			}
		})
	}
	// A late set_synchronous is refused the same way: the leader gave up
	// on it and may have decided otherwise since (sync.go's planner narrows
	// the recorded standbys only from the primary's reports, which a late
	// setting would contradict).
	t.Run("set_synchronous", func(t *testing.T) {
		d, c := promoteDaemon(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow})
		d.now = func() time.Time { return time.Now().Add(-120 * time.Second) }
		res := c.carryOut(ctx, lateOrder(6, leaderNow().Add(-40*time.Second), 30*time.Second,
			&pgdrv1.AgentCommand_SetSynchronous{SetSynchronous: &pgdrv1.SetSynchronous{Value: "ANY 1 (pg-a1, pg-a3)"}}))
		if res.Ok || !strings.Contains(res.Error, "deadline") {
			t.Fatalf("a set_synchronous sent 40s ago with a 30s budget, received now: %+v; want refused (deadline)", res)
		}
	})
	t.Run("fresh order still accepted", func(t *testing.T) {
		d, c := promoteDaemon(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a1", now: leaderNow})
		d.now = func() time.Time { return time.Now().Add(-120 * time.Second) }
		res := c.carryOut(ctx, lateOrder(6, leaderNow().Add(-time.Second), time.Minute, follow))
		if strings.Contains(res.Error, "deadline") {
			t.Fatalf("a follow order sent 1s ago with a 60s budget: %+v; want accepted", res)
		}
	})
}

// TestRestartConfirmsWithLeader: adversarial review of D8, finding 1b. A
// restart order starts PostgreSQL as it is on disk, writable on a former
// primary. Right before, the agent asks the leader (as before pg_promote)
// whether it still records this node as primary at the order's epoch and
// whether the order's deadline has not passed on its clock; otherwise it
// refuses and leaves PostgreSQL stopped.
func TestRestartConfirmsWithLeader(t *testing.T) {
	ctx := context.Background()
	leaderNow := time.Now
	restart := &pgdrv1.AgentCommand_Restart{Restart: &pgdrv1.Restart{Reason: "switchover aborted"}}
	t.Run("another primary at a newer epoch", func(t *testing.T) {
		// The switchover at epoch 6 was aborted, the leader gave up on the
		// restart, and a failover promoted pg-a3 at epoch 7; this agent has
		// not heard of epoch 7.
		leader := &epochClient{epoch: 7, primary: "pg-a3", now: leaderNow}
		d, c := promoteDaemon(t, &fakePromotion{}, leader)
		d.epoch.See(6)
		res := c.carryOut(ctx, lateOrder(6, leaderNow().Add(-time.Second), time.Minute, restart))
		if res.Ok || !strings.Contains(res.Error, "superseded") || strings.Contains(res.Error, "pg_ctl") {
			t.Fatalf("a restart at epoch 6 while the leader records pg-a3 at epoch 7: %+v; want refused (superseded) before pg_ctl", res)
		}
		if d.epoch.Current() != 7 {
			t.Fatalf("the agent knows epoch %d; want 7 (the leader's)", d.epoch.Current())
		}
	})
	t.Run("past its deadline on the leader's clock", func(t *testing.T) {
		leader := &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow}
		d, c := promoteDaemon(t, &fakePromotion{}, leader)
		// The agent's clock is 120s behind, so by it the order has 60s left
		// from its sending; on the leader's clock it ended 10s ago.
		d.now = func() time.Time { return time.Now().Add(-120 * time.Second) }
		res := c.carryOut(ctx, lateOrder(6, leaderNow().Add(-70*time.Second), time.Minute, restart))
		if res.Ok || !strings.Contains(res.Error, "deadline") || strings.Contains(res.Error, "pg_ctl") {
			t.Fatalf("a restart past its deadline on the leader's clock: %+v; want refused (deadline) before pg_ctl", res)
		}
	})
	t.Run("confirmed: PostgreSQL is started", func(t *testing.T) {
		leader := &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow}
		d, c := promoteDaemon(t, &fakePromotion{}, leader)
		res := c.carryOut(ctx, lateOrder(6, leaderNow(), time.Minute, restart))
		// No PostgreSQL in this test: pg_ctl start runs and fails.
		if res.Ok || !strings.Contains(res.Error, "restart: ") || strings.Contains(res.Error, "refus") {
			t.Fatalf("a confirmed restart: %+v; want pg_ctl start to run", res)
		}
		leader.mu.Lock()
		asked := leader.asked
		leader.mu.Unlock()
		if asked == 0 {
			t.Fatalf("the leader was not asked before the restart")
		}
		_ = d
	})
}

// TestSessionMeasuresLeaderClock: the session measures the leader's clock
// when it registers (and at every leader check), so an order that spent
// longer than its budget in transit is refused without asking the leader
// (the fake leader does not answer Epoch), on an agent whose clock is
// 120s behind.
func TestSessionMeasuresLeaderClock(t *testing.T) {
	fc, d := fakeSession(t, func(d *Daemon) {
		d.now = func() time.Time { return time.Now().Add(-120 * time.Second) }
	})
	c2 := fc.coords["c2"]
	testutil.WaitFor(t, 30*time.Second, "a measurement of the leader's clock", func() (bool, error) {
		return d.lclock.Last() != nil, errors.New("none yet")
	})
	if s, _ := d.lclock.Skew(); s > -119*time.Second || s < -121*time.Second {
		t.Fatalf("measured skew %s; want about -120s", s)
	}
	late := lateOrder(5, time.Now().Add(-70*time.Second), time.Minute,
		&pgdrv1.AgentCommand_Follow{Follow: &pgdrv1.Follow{Primary: "pg-a1", PrimaryDsn: "host=127.0.0.1 port=1 user=postgres"}})
	c2.cmds <- late
	testutil.WaitFor(t, 30*time.Second, "the order's result", func() (bool, error) {
		_, _, res, _, _ := c2.snapshot()
		return len(res) == 1, fmt.Errorf("%d results", len(res))
	})
	_, _, res, _, _ := c2.snapshot()
	if r := res[0]; r.Ok || !strings.Contains(r.Error, "deadline") || !strings.Contains(r.Error, "in transit by the leader's clock") {
		t.Fatalf("an order sent 70s ago with a 60s budget: %v; want refused, its transit counted", r)
	}
}

// TestPromoteLeaderMonotonic: adversarial review of D8, finding 3. The
// final check before pg_promote uses the time the leader still waits for
// the order, measured on its monotonic clock, when the leader answers it:
// a backward step of the leader's wall clock (here 120s) does not extend
// the promote.
func TestPromoteLeaderMonotonic(t *testing.T) {
	ctx := context.Background()
	stepped := func() time.Time { return time.Now().Add(-120 * time.Second) } // the leader's wall clock, stepped back
	sent := time.Now().Add(-50 * time.Second)                                 // on the leader's clock before the step
	t.Run("500ms left: refused", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		_, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: stepped,
			left: func(string) time.Duration { return 500 * time.Millisecond }})
		res := c.carryOut(ctx, budgetOrder(6, sent, time.Minute))
		if res.Ok || !strings.Contains(res.Error, "deadline") || fp.calls() != 0 {
			t.Fatalf("a promote the leader waits for 500ms more (its wall clock stepped back 120s): %+v (pg_promote called %d times)", res, fp.calls())
		}
	})
	t.Run("10s left: pg_promote's wait ends before", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		_, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: stepped,
			left: func(id string) time.Duration {
				if id != "p1" {
					return 0
				}
				return 10 * time.Second
			}})
		res := c.carryOut(ctx, budgetOrder(6, sent, time.Minute))
		fp.mu.Lock()
		wait := fp.wait
		fp.mu.Unlock()
		if !res.Ok || fp.calls() != 1 || wait <= 0 || wait > 10*time.Second {
			t.Fatalf("promote with 10s left on the leader's monotonic clock: %+v, pg_promote called %d times with wait %s (want at most 10s)", res, fp.calls(), wait)
		}
	})
}

// TestSetSynchronousBoundedByDeadline: a set_synchronous accepted just
// before its deadline must not be applied after it: the leader stopped
// waiting then, and its planner may narrow the recorded synchronous
// standbys from the primary's reports, which do not show the late
// setting yet. Connecting to the local server (here one that never
// answers) and the ALTER SYSTEM are bounded by the order's deadline.
func TestSetSynchronousBoundedByDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // accepts and never answers
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	leaderNow := time.Now
	// The process control reads the configuration once, when built.
	_, c := promoteDaemonCfg(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow}, func(cfg *config.Config) {
		cfg.Postgres.DSN = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=30", ln.Addr().(*net.TCPAddr).Port)
	})
	start := time.Now()
	res := c.carryOut(context.Background(), lateOrder(6, leaderNow(), 2*time.Second,
		&pgdrv1.AgentCommand_SetSynchronous{SetSynchronous: &pgdrv1.SetSynchronous{Value: "ANY 1 (pg-a1, pg-a3)"}}))
	took := time.Since(start)
	if res.Ok || took > 5*time.Second || !strings.Contains(res.Error, "deadline") {
		t.Fatalf("a set_synchronous with a 2s budget on a server that does not answer: %+v after %s; want refused (deadline) within about 2s", res, took.Round(time.Millisecond))
	}
}

// TestOrderGivenUpBySender: adversarial review of D8, finding 3. When the
// leader that sent an order answers the Epoch call and no longer waits for
// that order, it gave up on it: the promote or restart is refused, even
// if the deadline by the leader's wall clock (stepped back) seems far.
// Another leader (or an older coordinator) that does not know the order
// leaves the decision to the clocks.
func TestOrderGivenUpBySender(t *testing.T) {
	ctx := context.Background()
	stepped := func() time.Time { return time.Now().Add(-120 * time.Second) }
	sent := time.Now().Add(-5 * time.Second)
	for _, c := range []struct {
		name, sender, leader string
		refused              bool
	}{
		{"the sender gave up", "c1", "c1", true},
		{"another leader does not know it", "c1", "c2", false},
		{"older coordinator", "", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fp := &fakePromotion{finish: true}
			_, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: stepped, leader: c.leader})
			o := budgetOrder(6, sent, time.Minute)
			o.Sender = c.sender
			res := cc.carryOut(ctx, o)
			if c.refused != (!res.Ok && strings.Contains(res.Error, "no longer waits") && fp.calls() == 0) {
				t.Fatalf("%+v (pg_promote called %d times); want refused %t", res, fp.calls(), c.refused)
			}
		})
	}
	t.Run("restart", func(t *testing.T) {
		_, cc := promoteDaemon(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a2", now: stepped, leader: "c1"})
		o := lateOrder(6, sent, time.Minute, &pgdrv1.AgentCommand_Restart{Restart: &pgdrv1.Restart{}})
		o.Sender = "c1"
		res := cc.carryOut(ctx, o)
		if res.Ok || !strings.Contains(res.Error, "no longer waits") || strings.Contains(res.Error, "pg_ctl") {
			t.Fatalf("a restart its sender gave up on: %+v; want refused before pg_ctl", res)
		}
	})
}
