package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/failover"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// A promotion the leader gave up on may still complete: pg_promote that
// did not finish is not cancelled (PostgreSQL finishes it once replay
// catches up), and an order that got no answer may be running. Such a
// promote is recorded in the failover's result with the detail
// promote=unsettled. Before the next failover promotes anyone else, the
// candidate of an unsettled promote (still the recorded primary: nothing
// moves the primary while one is unsettled) is fenced at the recorded epoch,
// unless its fresh report shows PostgreSQL stopped (no postmaster and not
// connectable: a restarted server drops the promote request) and was
// sampled after the last promote order to it went out (the report names a
// command this leader sent since: echo.go). When it cannot be fenced the
// leader waits: it never promotes a second member while the first may
// still complete.

// Details of a failover result about its promote order.
const (
	detailPromote    = "promote"
	promoteUnsettled = "unsettled"
)

// promoteOutcome classifies a promote order's answer for the failover's
// result: its message, and whether the promotion may still complete.
func promoteOutcome(res *pgdrv1.CommandResult, err error) (msg string, unsettled bool) {
	switch {
	case err != nil:
		// Not sent at all when the agent had no command stream; otherwise
		// it may be running.
		return "failed: promote: " + err.Error(), !errors.Is(err, errNoStream)
	case res.GetPending():
		return "pending: promote: " + res.GetError(), true
	case !res.GetOk():
		// An agent from before pending results reports an unfinished
		// pg_promote as a failure.
		return "failed: promote: " + res.GetError(), strings.Contains(res.GetError(), "pg_promote")
	}
	return "", false
}

// kindPromoteSettled: a recorded primary whose promotion may still have
// completed was confirmed fenced (or reported PostgreSQL stopped)
// before another member is promoted.
const kindPromoteSettled = "promote-settled"

// unsettledPromote returns the recorded primary of c when a promote order
// to it may still complete ("" otherwise). It reads the replicated state,
// never the bounded history (whose evicted events would count as
// settled): Cluster.unsettled_promote names the primary at c's epoch and
// says an order is in flight (SetPrimary with promote, a promote-retry or
// a resumed order, with no outcome recorded yet: a leader may have died
// meanwhile) or may still complete (answered pending or not at all). A
// failure that did not reach the agent or was refused ends only its own
// order; a confirmed promotion, or a confirmed fence (promote-settled),
// settles it.
func (s *Server) unsettledPromote(c *pgdrv1.Cluster) string {
	u := c.GetUnsettledPromote()
	if node := c.GetPrimary(); node != "" && u.GetNode() == node && u.GetEpoch() == c.GetEpoch() && (u.GetInFlight() || u.GetMayComplete()) {
		return node
	}
	return ""
}

type forcedKey struct{}

// withForcedFailover marks a manual failover with --force: the operator
// takes responsibility for a candidate that cannot be fenced (a dead host).
func withForcedFailover(ctx context.Context, force bool) context.Context {
	if !force {
		return ctx
	}
	return context.WithValue(ctx, forcedKey{}, true)
}

func forcedFailover(ctx context.Context) bool { f, _ := ctx.Value(forcedKey{}).(bool); return f }

// settlePromote makes sure that no earlier promotion in c can still
// complete before cand is promoted at c's next epoch. It returns what it
// did (for the intent's details; "" for nothing), or wait: why cand must
// not be promoted now. A forced manual failover does not wait.
//
// The unsettled candidate counts as settled without an order when
// failover.PromoteSettled says so (a fresh report that PostgreSQL is
// stopped and not connectable, sampled after the last promote order went
// out; or the settle deadline its agent promised to keep has passed).
// Otherwise it is fenced at the recorded epoch, and a fence that succeeds
// settles it; when that fails the leader waits, until the settle deadline
// when there is one, or until an operator runs 'pgdrctl failover --force'
// when there is none (an agent that does not keep settle_by, an order
// whose outcome a leader change lost). A fence whose answer did not come
// back but that reached the agent is named by its later reports (hub.send
// notes when it went out, before the agent can receive it): once one of
// them says PostgreSQL is stopped, a later call settles on it.
func (s *Server) settlePromote(ctx context.Context, c *pgdrv1.Cluster, cand string) (done, wait string) {
	u := s.unsettledPromote(c)
	if u == "" || u == cand {
		return "", ""
	}
	k := memberKey{c.GetName(), u}
	now := time.Now()
	var m failover.Member
	if sm, ok := s.view.snapshot()[k]; ok {
		r := sm.report
		m = failover.Member{Name: u, Fresh: now.Sub(sm.at) <= s.cfg.Health.StaleAfter.Duration, SampledAfter: sm.sampledAfter, PostmasterAlive: r.GetPostmasterAlive(),
			// A server that answered counts as running even when its
			// recovery state is unknown: ingestReport stores such a report
			// as not connectable, RecoveryUnknown still says it answered.
			Connectable: r.GetConnectable() || r.GetRecoveryUnknown(), InRecovery: r.GetInRecovery(), Fenced: r.GetFenced()}
	}
	up := c.GetUnsettledPromote()
	// Honoured as recorded with the orders, not as registered now.
	un := failover.Unsettled{Node: u, InFlight: up.GetInFlight(), Honoured: up.GetHonoured(),
		Window: time.Duration(up.GetSettleAfterMs()) * time.Millisecond, Since: s.promoteClk.since(c.GetName(), u, c.GetEpoch())}
	settled, why := failover.PromoteSettled(un, m, now, s.cfg.Failover.SafetyMargin.Duration)
	if settled {
		done = fmt.Sprintf("%s, whose promotion at epoch %d was never confirmed, counts as settled: %s", u, c.GetEpoch(), why)
		s.recordPromoteEvent(ctx, c.GetName(), kindPromoteSettled, u, c.GetEpoch(), done, nil, pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED)
		return done, ""
	}
	// The fence carries the recorded epoch, which u (ordered to promote at
	// it) accepts: the next epoch is not recorded yet, and an order at it
	// that arrives too late would still raise u's epoch past the recorded
	// one, so that every later order at it were refused as stale.
	epoch := c.GetEpoch()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Failover.CommandTimeout.Duration)
	defer cancel()
	s.hub.waitStream(cctx, k, streamWait)
	res, err := s.hub.call(cctx, k, &pgdrv1.AgentCommand{
		Id: newCommandID(), Cluster: c.GetName(), Node: u, Epoch: epoch, IssuedAt: timestamppb.Now(),
		Kind: &pgdrv1.AgentCommand_Fence{Fence: &pgdrv1.Fence{Reason: fmt.Sprintf(
			"its promotion at epoch %d was never confirmed and may still complete; %s is promoted at epoch %d instead", epoch, cand, epoch+1)}},
	})
	if err == nil && !res.GetOk() {
		err = errors.New(res.GetError())
	}
	if err != nil && forcedFailover(ctx) {
		return fmt.Sprintf("%s, whose promotion at epoch %d was never confirmed, could not be fenced (%v); promoted anyway: forced by the operator", u, c.GetEpoch(), err), ""
	}
	if err != nil {
		until := "until it is fenced, stopped or promoted, or an operator runs 'pgdrctl failover --force' (only once its host is known to be down or its PostgreSQL stopped)"
		if !un.InFlight && un.Honoured && un.Window > 0 {
			until = "until it is fenced, stopped or promoted, or its settle deadline has passed"
		}
		return "", fmt.Sprintf("not promoting %s: %s was ordered to promote at epoch %d and never confirmed it, so its promotion may still complete, and it could not be fenced (%v); %s; waiting %s",
			cand, u, c.GetEpoch(), err, why, until)
	}
	done = fmt.Sprintf("%s fenced at epoch %d first: its promotion at that epoch was never confirmed and may still have completed", u, epoch)
	s.recordPromoteEvent(ctx, c.GetName(), kindPromoteSettled, u, epoch, done, nil, pgdrv1.PromoteMark_PROMOTE_MARK_SETTLED)
	return done, ""
}

// promoteClock is when this leader's promote orders went out, and when it
// caught up as leader, on its monotonic clock: the settle window of an
// unsettled promotion counts from there (failover.Unsettled.Since), never
// from a time another leader recorded, nor from any wall clock.
type promoteClock struct {
	mu   sync.Mutex
	term time.Time                // this term's catch-up (zero: not caught up)
	last map[promoteKey]time.Time // the latest order sent, per promotion
}

// promoteKey is one promotion: of node in cluster at epoch.
type promoteKey struct {
	cluster, node string
	epoch         uint64
}

// begin starts a term caught up at now (zero: no term), forgetting the
// previous term's orders.
func (p *promoteClock) begin(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.term, p.last = now, nil
}

// sent notes a promote order to node at epoch that went out before at (it
// is read after the call that sent it returned).
func (p *promoteClock) sent(cluster, node string, epoch uint64, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last = map[promoteKey]time.Time{}
	}
	k := promoteKey{cluster, node, epoch}
	if l, ok := p.last[k]; !ok || at.After(l) {
		p.last[k] = at
	}
}

// since is the time after which no promote order to node at epoch went
// out, as this leader knows: the later of its catch-up (orders of earlier
// leaders went out before it; a leader deposed without knowing it is
// refused by the agent's epoch and sender checks) and its own latest
// order. Zero before the catch-up.
func (p *promoteClock) since(cluster, node string, epoch uint64) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.term.IsZero() {
		return time.Time{}
	}
	at := p.term
	if l, ok := p.last[promoteKey{cluster, node, epoch}]; ok && l.After(at) {
		at = l
	}
	return at
}
