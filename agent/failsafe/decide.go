package failsafe

import (
	"strings"
	"time"
)

// tracker is the primary's bookkeeping, a pure state machine (the caller
// passes the time).
type tracker struct {
	lastGrantSent time.Time            // send time of the last granted renewal
	refused       bool                 // a reachable leader refused since then
	acks          map[string]time.Time // member → send time of its last acked ping
}

// granted records a granted renewal sent at sent: failsafe mode ends.
func (t *tracker) granted(sent time.Time) {
	if sent.After(t.lastGrantSent) {
		t.lastGrantSent = sent
	}
	t.refused = false
}

// refusedByLeader records a refusal from a reachable leader: no failsafe
// until the next grant.
func (t *tracker) refusedByLeader() { t.refused = true }

func (t *tracker) acked(member string, sent time.Time) {
	if t.acks == nil {
		t.acks = map[string]time.Time{}
	}
	if sent.After(t.acks[member]) {
		t.acks[member] = sent
	}
}

func (t *tracker) reset() { *t = tracker{} }

// input is the serve-or-fence decision's view.
type input struct {
	Now           time.Time
	Enabled       bool
	Granted       bool      // the lease was granted since the node became primary
	Fenced        bool      // already fenced
	LeaseDeadline time.Time // from the grants (the lease's deadline)
	Window        time.Duration
	Loop          time.Duration
	Members       []string // every other member whose acknowledgement is needed
	Tracker       *tracker
}

// verdict is the decision.
type verdict struct {
	Deadline time.Time // fence at or after this instant
	Serve    bool      // may serve writes now
	Active   bool      // serving only because of failsafe acknowledgements
	Ping     bool      // ping the members now
	PingAt   time.Time // when pings become due (zero: failsafe does not apply)
	Missing  []string  // members without an acknowledgement after the last grant
	Limiting string    // the member whose acknowledgement sets the deadline
	Reason   string    // why failsafe does not extend the lease ("" when it does)
}

// decide is the serve-or-fence decision, a pure function.
func decide(in input) verdict {
	v := verdict{Deadline: in.LeaseDeadline}
	t := in.Tracker
	if t == nil {
		t = &tracker{}
	}
	switch {
	case in.Fenced:
		v.Reason = "fenced"
	case !in.Enabled:
		v.Reason = "failsafe disabled (failover.failsafe: false)"
	case !in.Granted || t.lastGrantSent.IsZero():
		v.Reason = "no lease granted yet"
	case t.refused:
		v.Reason = "the coordinator leader refused the lease"
	case len(in.Members) == 0:
		v.Reason = "no other member known (Raft or gossip)"
	}
	if v.Reason == "" {
		// Ping once a renewal is overdue (the last one did not come back
		// granted within one and a half loops). The loop wakes at PingAt
		// rather than at its next tick: the acknowledgements must be in
		// before the lease deadline, and a loaded member answers slowly.
		v.PingAt = t.lastGrantSent.Add(in.Loop + in.Loop/2)
		v.Ping = !in.Now.Before(v.PingAt)
		var fs time.Time
		for _, m := range in.Members {
			s, ok := t.acks[m]
			if !ok || !s.After(t.lastGrantSent) {
				v.Missing = append(v.Missing, m)
				continue
			}
			if d := s.Add(in.Window); fs.IsZero() || d.Before(fs) {
				fs, v.Limiting = d, m
			}
		}
		switch {
		case len(v.Missing) > 0:
			v.Reason = "no failsafe acknowledgement from " + strings.Join(v.Missing, ", ") + " after the last renewal"
		case fs.After(v.Deadline):
			v.Deadline = fs
		}
	}
	v.Serve = !in.Fenced && in.Granted && in.Now.Before(v.Deadline)
	v.Active = v.Serve && !in.Now.Before(in.LeaseDeadline)
	return v
}

// pingTimeout bounds one round of pings sent at now: at least a loop (and
// 200 ms), and up to the serving deadline (at most three loops), since an
// acknowledgement counts by the ping's send time and a slow answer that
// arrives before the deadline still extends it.
func pingTimeout(now, deadline time.Time, loop time.Duration) time.Duration {
	return max(loop, 200*time.Millisecond, min(deadline.Sub(now), 3*loop))
}
