package incident

import (
	"fmt"
	"time"
)

// Level is one step of an escalation policy: who is notified (channels or
// contacts, by name) and how long an unacknowledged incident waits at this
// level before moving to the next. The last level's timeout is not used.
type Level struct {
	Name     string
	Channels []string
	Timeout  time.Duration
}

// EscalationPolicy is the ordered list of levels; level 0 is notified when
// an incident opens.
type EscalationPolicy struct {
	Levels []Level
}

// Validate refuses a policy with no levels, an unnamed level or a level
// (but the last) without a positive timeout.
func (p EscalationPolicy) Validate() error {
	if len(p.Levels) == 0 {
		return fmt.Errorf("%w: escalation policy has no levels", ErrInvalid)
	}
	for i, l := range p.Levels {
		if l.Name == "" {
			return fmt.Errorf("%w: escalation level %d has no name", ErrInvalid, i)
		}
		if i < len(p.Levels)-1 && l.Timeout <= 0 {
			return fmt.Errorf("%w: escalation level %d (%s) timeout must be positive, got %s", ErrInvalid, i, l.Name, l.Timeout)
		}
	}
	return nil
}

// Escalation is one move Escalate decided: the incident now at level To,
// whose channels the leader notifies.
type Escalation struct {
	ID       string
	Cluster  string
	From, To int
	Channels []string
}

// EscalateActor is the actor recorded on escalations.
const EscalateActor = "escalation"

// Escalate moves every open (not acknowledged, not resolved) incident that
// has waited its current level's timeout since it was opened or last
// escalated one level up (rule 4), and returns the moves in state order. An
// incident moves at most one level per call, so after an outage no level's
// notification is skipped; the wait restarts at now, so a second call at the
// same now moves nothing. An invalid policy is refused and changes nothing.
func Escalate(st State, p EscalationPolicy, now time.Time) (State, []Escalation, error) {
	if err := p.Validate(); err != nil {
		return st, nil, err
	}
	var moves []Escalation
	var out State
	for i, in := range st.Incidents {
		if in.Status != Open || in.EscalationLevel >= len(p.Levels)-1 || in.EscalationLevel < 0 {
			continue
		}
		since := in.Opened
		if !in.LastEscalated.IsZero() {
			since = in.LastEscalated
		}
		cur := p.Levels[in.EscalationLevel]
		if now.Sub(since) < cur.Timeout {
			continue
		}
		if moves == nil {
			out = st.Clone()
		}
		to := in.EscalationLevel + 1
		next := p.Levels[to]
		o := &out.Incidents[i]
		o.EscalationLevel = to
		o.LastEscalated = now
		o.Timeline = append(o.Timeline, Entry{Time: now, Actor: EscalateActor, Kind: KindEscalated,
			Message: fmt.Sprintf("not acknowledged within %s at level %d (%s): escalated to level %d (%s)",
				cur.Timeout, in.EscalationLevel, cur.Name, to, next.Name)})
		moves = append(moves, Escalation{ID: in.ID, Cluster: in.Cluster, From: in.EscalationLevel, To: to,
			Channels: append([]string(nil), next.Channels...)})
	}
	if moves == nil {
		return st, nil, nil
	}
	return out, moves, nil
}
