package orders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/leaderclock"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Bounds of the orders' waits.
const (
	followWait = 20 * time.Second
	// RejoinWait bounds a rejoined or re-cloned replica's wait for
	// streaming.
	RejoinWait = 2 * time.Minute
)

// Name is an order's kind as the logs name it.
func Name(cmd *pgdrv1.AgentCommand) string {
	switch cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote:
		return "promote"
	case *pgdrv1.AgentCommand_Follow:
		return "follow"
	case *pgdrv1.AgentCommand_Fence:
		return "fence"
	case *pgdrv1.AgentCommand_Rejoin:
		return "rejoin"
	case *pgdrv1.AgentCommand_SetSynchronous:
		return "set_synchronous"
	case *pgdrv1.AgentCommand_Demote:
		return "demote"
	case *pgdrv1.AgentCommand_Restart:
		return "restart"
	case *pgdrv1.AgentCommand_DropSlot:
		return "drop_slot"
	}
	return fmt.Sprintf("%T", cmd.GetKind())
}

// ErrOrderExpired: an order's deadline passed before it could start.
var ErrOrderExpired = errors.New("refused: the order's deadline passed")

// orderTiming is when an order stops being worth starting.
type orderTiming struct {
	// ID is the order's command id (the Epoch call asks about it), Sender
	// the coordinator that sent it ("": an older one).
	ID, Sender string
	// Deadline is on the agent's clock (zero: none). From a budget it
	// carries the monotonic reading of the receipt time, so that no step
	// of the agent's wall clock moves it.
	Deadline time.Time
	// Leader is the order's deadline on the leader's clock (zero: none):
	// what a promote or a restart checks against the leader's own clock.
	Leader time.Time
	// Relative: Deadline counts the leader's budget from the receipt.
	// Otherwise it is the leader's absolute deadline taken as the agent's
	// (an older coordinator that sends no budget): right only while the
	// clocks agree.
	Relative bool
	// Skew is the agent's wall clock at receipt minus the leader's at
	// sending: the clocks' offset plus the transit time. Valid when
	// HasSkew (the order carries sent_at).
	Skew    time.Duration
	HasSkew bool
	// Transit is the longest the order can have been on its way, on the
	// leader's clock (its sending to its receipt), as a measurement of
	// that clock tells (leaderclock.Measurement.Latest). Valid when
	// HasTransit; it is taken off the budget.
	Transit    time.Duration
	HasTransit bool
	// Received is the order's receipt on the agent's clock; Budget its
	// budget_ms (HasBudget: it carries sent_at and a deadline).
	Received  time.Time
	Budget    time.Duration
	HasBudget bool
}

// sentBefore is a time no later than the order's sending, on the agent's
// clock (Deps.Clock): its receipt less the transit time, which the
// measurement of the leader's clock overestimates (ok false: no such
// measurement).
func (t orderTiming) sentBefore() (time.Time, bool) {
	if !t.HasTransit {
		return time.Time{}, false
	}
	return t.Received.Add(-max(t.Transit, 0)), true
}

// orderDeadline times an order received at received, a reading of the
// agent's clock taken when the order arrived on the stream (not when its
// turn came behind another order). With a budget (sent_at set) the
// deadline is received + budget_ms on the agent's monotonic clock, less
// the time the order spent in transit when lc, a measurement of the
// leader's clock, tells it: received + min(budget, sent_at + budget -
// the leader's clock at receipt). So an order that sat in a frozen
// agent's socket buffer, on a stalled connection or behind a full receive
// queue loses that time, whatever the agent's wall clock says, and the
// leader may assume that the agent starts it no later than sent_at +
// budget_ms. Without lc the budget counts from the receipt (see Order for
// when that happens). Without a budget (an older coordinator) the
// leader's absolute deadline is compared with the agent's wall clock, as
// before.
func orderDeadline(cmd *pgdrv1.AgentCommand, received time.Time, lc *leaderclock.Measurement) orderTiming {
	t := orderTiming{ID: cmd.GetId(), Sender: cmd.GetSender(), Received: received}
	s := cmd.GetSentAt()
	if s != nil {
		t.Skew, t.HasSkew = received.Sub(s.AsTime()), true
	}
	dl := cmd.GetDeadline()
	if dl == nil {
		return t
	}
	t.Leader = dl.AsTime()
	if t.HasSkew {
		budget := time.Duration(cmd.GetBudgetMs()) * time.Millisecond
		t.Budget, t.HasBudget = budget, true
		if lc != nil {
			t.Transit, t.HasTransit = lc.Latest(received).Sub(s.AsTime()), true
			budget -= max(t.Transit, 0)
		}
		t.Deadline, t.Relative = received.Add(budget), true
		return t
	}
	t.Deadline = t.Leader
	return t
}

// orderLeaderClock is the measurement of the leader's clock an order with
// a budget is timed with. Every session measures it when it registers
// and again every leaderRecheck, so there is one unless the coordinator
// sends no clock in those answers (one from before this agent). Then, to
// stay on the safe side, the leader is asked once (the Epoch call, which
// carries its clock too); if that fails as well the budget counts from the
// receipt, as that coordinator expects, and the orders that make this
// node writable (promote, restart) are refused anyway unless the leader
// confirms them (confirmCurrent).
func (x *Executor) orderLeaderClock(ctx context.Context, cmd *pgdrv1.AgentCommand) *leaderclock.Measurement {
	if cmd.GetSentAt() == nil || cmd.GetDeadline() == nil {
		return nil
	}
	if lc := x.lclock.Last(); lc != nil {
		return lc
	}
	if _, _, _, err := x.askEpoch(ctx, ""); err != nil {
		x.log.Warn("no measurement of the coordinator leader's clock: the order's budget counts from its receipt, its transit time unknown",
			"command", cmd.GetId(), "err", err)
	}
	return x.lclock.Last()
}

// Order carries out one of the coordinator's orders (promote, follow,
// fence, rejoin), one at a time. An order must carry an epoch, and one
// older than the highest epoch seen (checked again once the previous
// order is done) is refused, as is one whose deadline (when the leader
// stops waiting for it; see orderDeadline, counted from received) passed
// before it could start. Only an accepted order's epoch becomes the
// highest seen. It returns the output to report. ctx is the agent's run
// context, not the session's: orders outlive the session that brought
// them.
func (x *Executor) Order(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cmd.GetEpoch() == 0 {
		return "", fmt.Errorf("%s: an order must carry an epoch", Name(cmd))
	}
	if known := x.epoch.Current(); cmd.GetEpoch() < known {
		return "", fmt.Errorf("stale epoch %d: this agent knows epoch %d", cmd.GetEpoch(), known)
	}
	timing := orderDeadline(cmd, received, x.orderLeaderClock(ctx, cmd))
	if dl := timing.Deadline; !dl.IsZero() {
		if now := x.clock(); !now.Before(dl) {
			if timing.Relative {
				transit := "its transit time unknown"
				if timing.HasTransit {
					transit = fmt.Sprintf("%s of it spent in transit by the leader's clock", max(timing.Transit, 0).Round(time.Millisecond))
				}
				return "", fmt.Errorf("%w: %s order %s at epoch %d, received %s ago with a budget of %s, %s (it waited in transit or behind another order); the leader no longer waits for it",
					ErrOrderExpired, Name(cmd), cmd.GetId(), cmd.GetEpoch(), now.Sub(received).Round(time.Millisecond), time.Duration(cmd.GetBudgetMs())*time.Millisecond, transit)
			}
			return "", fmt.Errorf("%w: %s order %s at epoch %d, issued at %s, had to start by %s by this agent's clock (it waited behind another order or in transit; the coordinator sent no budget, so the clocks must agree); the leader no longer waits for it",
				ErrOrderExpired, Name(cmd), cmd.GetId(), cmd.GetEpoch(), cmd.GetIssuedAt().AsTime().Format(time.RFC3339Nano), dl.Format(time.RFC3339Nano))
		}
	}
	switch cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote, *pgdrv1.AgentCommand_Follow, *pgdrv1.AgentCommand_Fence, *pgdrv1.AgentCommand_Rejoin,
		*pgdrv1.AgentCommand_SetSynchronous, *pgdrv1.AgentCommand_Demote, *pgdrv1.AgentCommand_Restart, *pgdrv1.AgentCommand_DropSlot:
	default:
		return "", fmt.Errorf("unknown order %T", cmd.GetKind())
	}
	// Adopted only now that the order is accepted: a refused order (expired,
	// unknown) must not make the next order at the recorded epoch stale.
	x.epoch.See(cmd.GetEpoch())
	switch k := cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Promote:
		var settle settlePromise
		if sb := k.Promote.GetSettleBy(); sb != nil {
			settle.By = sb.AsTime()
		}
		settle.After = time.Duration(k.Promote.GetSettleAfterMs()) * time.Millisecond
		return x.promoter.promote(ctx, cmd.GetEpoch(), timing, settle)
	case *pgdrv1.AgentCommand_Follow:
		return x.follow(ctx, k.Follow.GetPrimary(), k.Follow.GetPrimaryDsn())
	case *pgdrv1.AgentCommand_Fence:
		reason := k.Fence.GetReason()
		if reason == "" {
			reason = "no reason given"
		}
		if err := x.Fence(ctx, fmt.Sprintf("fence order %s at epoch %d: %s", cmd.GetId(), cmd.GetEpoch(), reason)); err != nil {
			return "", err
		}
		return "fenced: PostgreSQL stopped (fast shutdown), marker " + health.FencedPath(x.cfg.Postgres.PGData), nil
	case *pgdrv1.AgentCommand_Rejoin:
		return x.rejoin(ctx, cmd.GetId(), cmd.GetEpoch(), k.Rejoin.GetPrimary(), k.Rejoin.GetPrimaryDsn())
	case *pgdrv1.AgentCommand_SetSynchronous:
		return x.setSynchronous(ctx, cmd.GetEpoch(), k.SetSynchronous.GetValue(), timing)
	case *pgdrv1.AgentCommand_Demote:
		return x.demote(ctx, cmd.GetEpoch(), k.Demote.GetReason())
	case *pgdrv1.AgentCommand_Restart:
		return x.restart(ctx, cmd.GetEpoch(), timing)
	case *pgdrv1.AgentCommand_DropSlot:
		return x.dropSlot(ctx, k.DropSlot.GetName(), k.DropSlot.GetReason())
	}
	return "", fmt.Errorf("unknown order %T", cmd.GetKind())
}

// waitCond polls cond every 200ms until it holds, fails, or timeout.
func waitCond(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: not within %s: %w", what, timeout, last)
			}
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
