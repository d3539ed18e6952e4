package server

import (
	"fmt"
	"strings"
	"time"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// failsafeRefusal is why a member refuses promotion per its report: it
// acknowledged a failsafe ping of the recorded primary within the lease
// TTL of the report's time (both times from the member's clock), or within
// the longer window the member reports (the ping's TTL when the primary's
// is longer). "" when it does not. With primary "", an acknowledgement of
// any primary counts, as the agent itself counts it (agent/failsafe): a
// switchover checks its target so, before it stops the old primary, since
// the target would refuse its promote order once the old one is down.
func failsafeRefusal(r *pgdrv1.HealthReport, primary string, ttl time.Duration) string {
	if r == nil || r.FailsafeAckedAt == nil || r.Time == nil || (primary != "" && r.FailsafePrimary != primary) {
		return ""
	}
	if primary == "" {
		primary = r.FailsafePrimary
	}
	age := r.Time.AsTime().Sub(r.FailsafeAckedAt.AsTime())
	if age < 0 {
		age = 0
	}
	if age >= max(ttl, time.Duration(r.FailsafeRefuseMs)*time.Millisecond) {
		return ""
	}
	return fmt.Sprintf("acknowledged %s's failsafe ping %s ago (epoch %d)", primary, age.Round(time.Millisecond), r.FailsafeEpoch)
}

// failsafeTTLFactor: an agent refuses a failsafe ping whose lease TTL is
// more than this many times its own (agent/failsafe ttlFactor), so no
// refusal window is longer than that many lease TTLs.
const failsafeTTLFactor = 4

// refusalEnds is when, on this coordinator's clock, the refusal sm's
// report states ends (zero: it states none): its window (as
// failsafeRefusal reads it) less the acknowledgement's age at the report,
// from when the report arrived.
func refusalEnds(sm sample, ttl time.Duration) time.Time {
	r := sm.report
	if r == nil || r.FailsafeAckedAt == nil || r.Time == nil {
		return time.Time{}
	}
	age := max(r.Time.AsTime().Sub(r.FailsafeAckedAt.AsTime()), 0)
	return sm.at.Add(max(ttl, time.Duration(r.FailsafeRefuseMs)*time.Millisecond) - age)
}

// isFailsafeRefusal recognises an agent's refusal of a Promote order
// because it acknowledged the primary's failsafe ping.
func isFailsafeRefusal(msg string) bool {
	return strings.Contains(msg, "refuses promotion: acknowledged") && strings.Contains(msg, "failsafe ping")
}

// revokeExpired revokes the lease of epoch for a failover, but only if it
// has expired at now: a lease renewed meanwhile (a primary serving under
// failsafe that reached the leader again) is left alone and false is
// returned, so that a renewal and a promotion never overlap. With no lease
// of that epoch recorded it revokes nothing and returns true.
func (l *leases) revokeExpired(cluster string, epoch uint64, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	le, ok := l.m[cluster]
	if !ok || le.epoch != epoch {
		return true
	}
	if now.Before(le.expires) && !le.revoked {
		return false
	}
	le.revoked = true
	l.m[cluster] = le
	return true
}
