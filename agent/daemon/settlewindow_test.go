package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// settleOrder is a promote order as a leader of today sends it, from a
// leader whose clock reads leaderNow: with a budget and a settle window
// (settle_by is that window from sent_at on the leader's clock).
func settleOrder(epoch uint64, leaderNow time.Time, budget, window time.Duration) *pgdrv1.AgentCommand {
	c := budgetOrder(epoch, leaderNow, budget)
	c.GetPromote().SettleBy = timestamppb.New(leaderNow.Add(window))
	c.GetPromote().SettleAfterMs = uint64(window.Milliseconds())
	return c
}

// TestPromoteSettleWindowClockSkew: review C of D10. The settle deadline
// is a window from the order's sending, counted on the agent's monotonic
// clock (less the transit time the leader's clock bounds), not the
// leader's absolute settle_by compared with the agent's wall clock: with
// the leader's clock 3s ahead of or behind the agent's, the watchdog's
// deadline and the watcher's give-up stay the window less the safety
// margin from the receipt.
func TestPromoteSettleWindowClockSkew(t *testing.T) {
	const window = 8 * time.Second
	for _, off := range []time.Duration{3 * time.Second, -3 * time.Second} {
		t.Run(fmt.Sprintf("leader clock %s off", off), func(t *testing.T) {
			leaderNow := func() time.Time { return time.Now().Add(off) }
			received := time.Now() // sent now too, on the leader's monotonic clock
			fp := &fakePromotion{finish: false}
			d, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2", now: leaderNow,
				left: func(string) time.Duration { return time.Minute - time.Since(received) }})
			res := cc.carryOut(context.Background(), settleOrder(6, leaderNow(), time.Minute, window))
			if res.Ok || !res.Pending {
				t.Fatalf("unfinished pg_promote: %+v", res)
			}
			hb, _ := d.wd.Heartbeat()
			want := time.Until(received.Add(window - margin(d))).Milliseconds()
			if hb.RemainingMs > want+300 || hb.RemainingMs < want-1500 {
				t.Fatalf("watchdog deadline in %d ms, want about %d ms (the window %s less the margin %s from the receipt), whatever the leader's clock (%s off)",
					hb.RemainingMs, want, window, margin(d), off)
			}
			reason := waitFenced(t, d, 20*time.Second)
			if el := time.Since(received); !strings.Contains(reason, "settle deadline") || el > window-margin(d)+2*time.Second || el < window-margin(d)-2*time.Second {
				t.Fatalf("fenced %s after the receipt (window %s, margin %s) for %q", el, window, margin(d), reason)
			}
		})
	}
}

// TestPromoteSettleWindowUnknownSending: without a bound on when the
// order was sent (no measurement of the leader's clock and no answer
// saying how long the leader still waits), the settle window cannot be
// counted from the sending: the promotion is refused without pg_promote.
func TestPromoteSettleWindowUnknownSending(t *testing.T) {
	fp := &fakePromotion{finish: false}
	d, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"}) // sends neither its clock nor the wait
	res := cc.carryOut(context.Background(), settleOrder(6, time.Now(), time.Minute, 8*time.Second))
	if res.Ok || res.Pending || !strings.Contains(res.Error, "settle") || fp.calls() != 0 {
		t.Fatalf("a settle window that cannot be timed: %+v (pg_promote called %d times)", res, fp.calls())
	}
	if _, err := os.Stat(d.guard.Path()); err == nil {
		t.Fatal("a refused promotion left its guard")
	}
}

// TestPromoteLateOrderOfDeposedLeader: review 3/4. An order that carries
// its sender and a settle window is carried out only when the leader
// answering the last check is that sender and still waits for it: a
// deposed leader's late order, answered by the new leader (which counts
// its settle window from its own catch-up, later than the order), is
// refused before pg_promote.
func TestPromoteLateOrderOfDeposedLeader(t *testing.T) {
	for _, c := range []struct {
		name, leader string
		waiting      bool
		refused      bool
	}{
		{"answered by another leader", "c2", false, true},
		{"answered by another leader that waits for a command of that id", "c2", true, true},
		{"answered by the sender which no longer waits", "c1", false, true},
		{"answered by the sender which waits", "c1", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			received := time.Now()
			ec := &epochClient{epoch: 6, primary: "pg-a2", now: time.Now, leader: c.leader}
			if c.waiting {
				ec.left = func(string) time.Duration { return time.Minute - time.Since(received) }
			}
			fp := &fakePromotion{finish: true}
			_, cc := promoteDaemon(t, fp, ec)
			o := settleOrder(6, time.Now(), time.Minute, 30*time.Second)
			o.Sender = "c1"
			res := cc.carryOut(context.Background(), o)
			if refused := !res.Ok && !res.Pending && fp.calls() == 0; refused != c.refused {
				t.Fatalf("%+v (pg_promote called %d times); want refused %t", res, fp.calls(), c.refused)
			}
		})
	}
}
