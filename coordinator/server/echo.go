package server

import (
	"sync"
	"time"
)

// A health report names the latest command its agent had received before
// the report's checks began (HealthReport.after_command_id). When this
// leader sent that command, the report was sampled after the command went
// out, on this leader's monotonic clock, however late the report arrived:
// an agent sends its cached latest report when a new session opens, and a
// report can wait in transit, so the time a report was received says
// nothing of when it was sampled. That lower bound is what lets a report
// that PostgreSQL is stopped settle an unsettled promotion
// (failover.Member.SampledAfter, failover.PromoteSettled). A report that
// names the promote order itself does not: the order went out before the
// time the settle counts from (promoteClock reads it after the order's
// call returned), and the agent may carry out an order received before
// its checks began after they ended. A later command does (the fence
// settlePromote sends, or the ping that opens a new command stream).

// sentKeep bounds the commands remembered per member: a report names the
// latest command its agent had received, which is among the latest sent
// (the stream delivers them in order) unless many more went out since;
// then the report's sample time is unknown, which is the safe side.
const sentKeep = 16

// sentCommands is when this leader sent its latest commands to each
// member, on its monotonic clock, read before the command is handed to
// the member's stream (so before the agent can have received it).
type sentCommands struct {
	mu sync.Mutex
	m  map[memberKey][]sentID // oldest first, at most sentKeep each
}

// sentID is one command sent and when.
type sentID struct {
	id string
	at time.Time
}

// note records command id sent to k at at (time.Now, with its monotonic
// reading, taken before the command is queued for the stream).
func (s *sentCommands) note(k memberKey, id string, at time.Time) {
	if id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[memberKey][]sentID{}
	}
	l := append(s.m[k], sentID{id: id, at: at})
	if len(l) > sentKeep {
		l = append([]sentID(nil), l[len(l)-sentKeep:]...)
	}
	s.m[k] = l
}

// at is when command id went out to k (zero: this leader did not send it,
// or has forgotten it).
func (s *sentCommands) at(k memberKey, id string) time.Time {
	if id == "" {
		return time.Time{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.m[k] {
		if c.id == id {
			return c.at
		}
	}
	return time.Time{}
}

// reset forgets every command, at a change of leadership (the times stay
// true on this process's clock, but a new term's orders count from its
// own catch-up; this keeps the map bounded by the members of one term).
func (s *sentCommands) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = nil
}
