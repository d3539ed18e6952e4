package lease

import (
	"fmt"
	"strings"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Lease is the agent's view of its primary lease, a pure state machine:
// every method takes the time from the caller (a monotonic reading from
// time.Now in the agent, a fake clock in tests). It is not safe for
// concurrent use; Holder guards it with a mutex.
//
// Why the agent fences before the leader considers the lease expired:
// let s be the instant the agent SENT its last granted renewal and r the
// instant the leader RECEIVED it; causality gives s <= r in real time.
// The agent fences at D = s + T - M, measured on its own monotonic clock
// (T the lease TTL, M the safety margin, both the more conservative of
// the agent's and the grant's); the leader treats the lease as live until
// E = r + T on its monotonic clock, and promotes nobody before E. If
// each clock's rate is off by at most rho (|rate - 1| <= rho), D happens
// in real time no later than s + (T-M)/(1-rho), and E no earlier than
// r + T/(1+rho) >= s + T/(1+rho). So D < E whenever
// (T-M)/(1-rho) + f < T/(1+rho), where f is how long the fencing takes to
// stop writes (pg_ctl delivers SIGINT, the postmaster terminates every
// backend at once). With T = 5s, M = 1s and rho of a few hundred ppm the
// margin leaves almost a second for f. Wall-clock steps do not matter:
// both sides measure intervals on monotonic clocks, and a grant whose
// answer arrives late still counts from its send time, never later.
// Requests that never reached the leader extend nothing; a grant counts
// only if the agent saw it, so a lost answer only makes the agent fence
// earlier. A leader that just took over must itself wait T before
// treating an old lease as expired (the coordinator's side).
type Lease struct {
	ttl, margin time.Duration // configured (failover.lease_ttl, safety_margin)

	deadline time.Time // fence at or after this instant
	granted  bool      // a grant was seen since the node (maybe) became primary
	fenced   string    // why the node was fenced; "" while not fenced
}

// NewLease starts the lease at start: a primary that never gets a grant
// fences at start + ttl - margin.
func NewLease(start time.Time, ttl, margin time.Duration) *Lease {
	l := &Lease{ttl: ttl, margin: margin}
	l.deadline = start.Add(l.window(0, 0))
	return l
}

// window is how long after sending a granted renewal the agent may keep
// serving: the smaller TTL minus the larger margin of the agent's and the
// grant's (zero values in the grant mean "as configured"). The larger
// margin keeps the drift allowance the leader asked for; a smaller one
// would move the deadline later than either side intended.
func (l *Lease) window(grantTTL, grantMargin time.Duration) time.Duration {
	ttl, margin := l.ttl, l.margin
	if grantTTL > 0 {
		ttl = min(ttl, grantTTL)
	}
	if grantMargin > 0 {
		margin = max(margin, grantMargin)
	}
	return max(ttl-margin, 0)
}

// Deadline is when the agent fences unless a grant moves it.
func (l *Lease) Deadline() time.Time { return l.deadline }

// Granted reports whether a grant was seen since the node last was
// positively not a primary.
func (l *Lease) Granted() bool { return l.granted }

// Reset restarts the lease at now: the node is positively not a writable
// primary (a replica, or stopped), so a later promotion starts with a
// fresh grace period of one window and needs a new grant to serve.
func (l *Lease) Reset(now time.Time) {
	l.granted = false
	l.deadline = now.Add(l.window(0, 0))
}

// Fenced returns why the node was fenced ("" when it is not).
func (l *Lease) Fenced() string { return l.fenced }

// Fence records that the node was fenced.
func (l *Lease) Fence(reason string) {
	if reason == "" {
		reason = "fenced"
	}
	l.fenced = reason
	l.granted = false
}

// Unfence clears the fence (after a rejoin) and restarts the lease at now.
func (l *Lease) Unfence(now time.Time) {
	l.fenced = ""
	l.Reset(now)
}

// Expired reports whether the deadline has passed at now.
func (l *Lease) Expired(now time.Time) bool { return !now.Before(l.deadline) }

// RefusalNoPrimary is the text of the leader's refusal while it has not
// recorded a primary yet (it records the initial one from the reports).
const RefusalNoPrimary = "no primary recorded"

// Answer applies the leader's answer to a renewal sent at sent by node
// self. It returns fence=true (with the reason) when the answer says
// another member holds the lease: the refusal names another primary, or
// a higher epoch without naming this node. A refusal saying no primary is
// recorded yet extends nothing and fences nothing (the deadline still
// runs); a refusal naming this node (its request carried an older epoch)
// or naming neither a primary nor a newer epoch neither.
func (l *Lease) Answer(self string, epoch uint64, sent time.Time, resp *pgdrv1.RenewLeaseResponse) (fence bool, reason string) {
	if resp.GetGranted() {
		w := l.window(time.Duration(resp.GetTtlMs())*time.Millisecond, time.Duration(resp.GetSafetyMarginMs())*time.Millisecond)
		if d := sent.Add(w); d.After(l.deadline) {
			l.deadline = d
		}
		l.granted = true
		return false, ""
	}
	why := resp.GetReason()
	if why == "" {
		why = "no reason given"
	}
	switch {
	case strings.Contains(strings.ToLower(why), RefusalNoPrimary):
		return false, ""
	case resp.GetPrimary() == self:
		return false, ""
	case resp.GetPrimary() != "":
		return true, fmt.Sprintf("the coordinator leader refused the lease: the primary is %s at epoch %d (%s)", resp.GetPrimary(), resp.GetEpoch(), why)
	case resp.GetEpoch() > epoch:
		return true, fmt.Sprintf("the coordinator leader refused the lease at epoch %d, newer than this agent's %d (%s)", resp.GetEpoch(), epoch, why)
	}
	// A refusal naming neither another primary nor a newer epoch extends
	// nothing: the deadline decides.
	return false, ""
}

// Serving decides /primary while coordinators are configured: 200 only
// while a grant holds and the node is not fenced; otherwise why not.
func (l *Lease) Serving(now time.Time) (bool, string) {
	switch {
	case l.fenced != "":
		return false, "fenced: " + l.fenced
	case !l.granted:
		return false, "no primary lease granted by the coordinator leader yet"
	case l.Expired(now):
		return false, fmt.Sprintf("the primary lease expired %s ago", now.Sub(l.deadline).Round(time.Millisecond))
	}
	return true, ""
}
