package slo

import "time"

// DefaultInterval is the heartbeat interval assumed when the writer's
// report does not name one.
const DefaultInterval = time.Second

// Tolerance is added to the allowance for report jitter (transit, a
// round of checks that sampled the same heartbeat twice).
const Tolerance = time.Second

// Allowed is how old the newest known heartbeat may be, on the leader's
// clock, for a second to count as good while the leader cannot know yet
// whether the next one came: one interval for the next commit, one for
// the agent's next round of checks to see it (health.interval is assumed
// not longer than heartbeat.interval), and Tolerance.
func Allowed(interval time.Duration) time.Duration {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return 2*interval + Tolerance
}

// Tracker is what the leader remembers between two judgements of one
// cluster. The zero value is a cluster with no heartbeat known yet.
type Tracker struct {
	// Last is the commit time of the newest heartbeat judged, placed on
	// the leader's clock (with its monotonic reading).
	Last time.Time
	// Streak is how many seconds have been counted bad since Last while
	// no newer heartbeat came (provisionally: see Judge).
	Streak int
	// Start is when this leader first judged the cluster: a gap is
	// corrected only from then on (earlier seconds were no leader's, and
	// the FSM counts them unobserved).
	Start time.Time
}

// Verdict is the outcome of one judgement: the seconds to add to the
// good and bad counts. Normally one of them is 1; when a gap ends, the
// seconds counted provisionally are corrected (Good may then be
// negative: seconds counted good that were in fact without writes).
type Verdict struct {
	Good, Bad int
}

// Judge judges the second ending at now for one cluster, given the commit
// time of the newest heartbeat the leader knows (newest, on the leader's
// clock; zero: none known) and the writer's heartbeat interval.
//
// While heartbeats keep coming, a second is good when the newest one is at
// most Allowed(interval) old. Once a heartbeat newer than t.Last arrives
// after a gap, the gap is known exactly: newest - t.Last on the commit
// times (from t.Start at the earliest), of which Missing seconds were
// without a commit. The seconds judged since t.Last are then corrected to
// that: the provisional judgement (good until the
// allowance ran out, bad after) is replaced by the measured gap, so a
// failover costs about its real write gap and not the gap minus the
// allowance.
func Judge(t Tracker, newest, now time.Time, interval time.Duration) (Tracker, Verdict) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if newest.IsZero() {
		// Nothing known: the caller does not judge such a cluster (it
		// becomes an unobserved gap); defensively, bad.
		return t, Verdict{Bad: 1}
	}
	if t.Last.IsZero() {
		// The first heartbeat this leader knows: nothing to correct.
		t.Last, t.Start = newest, now
		if now.Sub(newest) <= Allowed(interval) {
			return t, Verdict{Good: 1}
		}
		t.Streak = 1
		return t, Verdict{Bad: 1}
	}
	if newest.After(t.Last) {
		from := t.Last
		if floor := t.Start.Add(-Allowed(interval)); from.Before(floor) {
			from = floor
		}
		missing := Missing(newest.Sub(from), interval)
		corr := missing - t.Streak
		t.Last, t.Streak = newest, 0
		return t, Verdict{Good: 1 - corr, Bad: corr}
	}
	if now.Sub(t.Last) <= Allowed(interval) {
		return t, Verdict{Good: 1}
	}
	t.Streak++
	return t, Verdict{Bad: 1}
}

// Missing is how many whole seconds without a commit a gap between two
// known heartbeats stands for. Heartbeats are committed every interval,
// and the agent samples the newest one every health interval, so two
// samples in a row may be one or two intervals apart with no commit
// missing; a gap counts whole seconds beyond one and a half intervals.
// A longer outage of U seconds shows as a gap of about U + 1 to U + 2
// intervals (the last commit before it and the first after it fall
// anywhere within their interval), so Missing is within about a second
// of U.
func Missing(gap, interval time.Duration) int {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return max(int((gap-interval-interval/2)/time.Second), 0)
}
