package failover

import (
	"fmt"
	"time"
)

// Unsettled is what the leader knows of a promotion it ordered and never
// saw the outcome of: the recorded primary's, at the current epoch, which
// may still complete (PostgreSQL does not cancel a requested promotion).
type Unsettled struct {
	Node string
	// InFlight: an order's outcome was never recorded (a coordinator
	// leader changed while it was out): what it promised is unknown.
	InFlight bool
	// Window: every order that may still complete carried this settle
	// window (Promote.settle_after_ms) or a shorter one (0: one of them
	// carried none).
	Window time.Duration
	// Since: the leader's clock, with its monotonic reading, after which
	// none of those orders was sent: after its own latest one went out, or
	// when it caught up as leader (orders of earlier leaders). Zero:
	// unknown. Never a time read from another leader's clock.
	Since time.Time
	// Honoured: the node's agent registered that it keeps settle_by, with
	// a watchdog that covers its own death.
	Honoured bool
}

// PromoteSettled decides whether the unsettled promotion u can no longer
// make its node writable, from m, the node's latest report, and the
// leader's clock now (with its monotonic reading, as u.Since); margin is
// the leader's safety margin, added to the window for the clocks' rates
// and the agent's estimate of the sending. It returns why, either way:
//   - a fresh report, sampled after u.Since (after every order that may
//     still complete went out: m.SampledAfter, when this leader sent the
//     command the report names as the latest its agent had received before
//     its checks began, is not before u.Since), that PostgreSQL is
//     stopped: no postmaster and no connection (a restarted server drops
//     the promote request: the postmaster removes the signal file). When
//     the leader received the report proves nothing: the agent sends its
//     cached report again on a new session, and a sample from before the
//     order may arrive after it, the server started in between. A report
//     that names no command this leader sent (an older agent) never
//     settles: the leader fences instead. One signal alone is not enough:
//     the postmaster is "not alive" on any postmaster.pid read error or
//     when the PID namespace hides it. "Fenced" settles nothing by itself:
//     the marker is written before PostgreSQL is stopped, and a fence whose
//     stop failed leaves a running replica whose pending promotion can
//     still complete;
//   - the window plus margin has passed since u.Since on the leader's
//     monotonic clock, the agent keeps settle deadlines, and no
//     order of unknown promise is out: the agent's watcher, or its
//     watchdog if the agent is gone, has made sure the node is not
//     writable unless a lease was granted to it (which the leader's lease
//     check covers);
//
// otherwise it is not settled: the leader fences the node first, or waits.
func PromoteSettled(u Unsettled, m Member, now time.Time, margin time.Duration) (bool, string) {
	note := ""
	if m.Fresh && !m.PostmasterAlive && !m.Connectable {
		if !u.Since.IsZero() && !m.SampledAfter.IsZero() && !m.SampledAfter.Before(u.Since) {
			return true, fmt.Sprintf("%s reports PostgreSQL stopped, sampled after the last promote order to it went out: no postmaster and not connectable (a restarted server drops the promote request)", u.Node)
		}
		// A report sampled before an order went out says nothing of it:
		// the server may have been started since.
		note = fmt.Sprintf("%s's report that PostgreSQL is stopped was not sampled after the last promote order to it went out, as far as this leader knows (it names no command this leader sent after that); ", u.Node)
	}
	settled, why := promoteDeadlinePassed(u, now, margin)
	if !settled {
		why = note + why
	}
	return settled, why
}

// promoteDeadlinePassed: the settle-deadline part of PromoteSettled.
func promoteDeadlinePassed(u Unsettled, now time.Time, margin time.Duration) (bool, string) {
	end := u.Since.Add(u.Window + margin)
	switch {
	case u.InFlight:
		return false, fmt.Sprintf("the outcome of a promote order to %s was never recorded (a coordinator leader changed meanwhile), so what it promised is unknown", u.Node)
	case !u.Honoured:
		return false, fmt.Sprintf("%s's agent does not guarantee to drop an unconfirmed promotion by its deadline (an older agent, or failover.watchdog off)", u.Node)
	case u.Window <= 0:
		return false, fmt.Sprintf("an order to %s that may still complete carried no settle deadline", u.Node)
	case u.Since.IsZero():
		return false, fmt.Sprintf("this leader does not know when the last order to %s that may still complete went out", u.Node)
	case now.Before(end):
		return false, fmt.Sprintf("%s's agent drops the promotion unless confirmed within %s of its order (the settle deadline), which this leader counts from %s: by %s with the safety margin",
			u.Node, u.Window, u.Since.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
	}
	return true, fmt.Sprintf("%s's promotion was not confirmed by its settle deadline (%s from its order, counted from %s on this leader's clock, plus the safety margin %s): its agent, or its watchdog, has fenced it unless it was granted a lease",
		u.Node, u.Window, u.Since.UTC().Format(time.RFC3339), margin)
}
