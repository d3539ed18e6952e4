package lease

import pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"

// leaseRole is what the lease loop makes of the latest report.
type leaseRole int

const (
	roleWait       leaseRole = iota // no report yet
	roleNotPrimary                  // a replica, or stopped: no writes possible
	roleMaybe                       // writable, or running and not known to be a replica
	roleFenced                      // fenced and not writable
	roleFencedLive                  // fenced, yet running writable: stop it again
	// roleUnsure: running and answering, but the report could not say
	// whether it is in recovery, and no standby.signal says it is a
	// replica: renew (a primary under load keeps its lease), but a refusal
	// does not fence it; only the lease deadline does.
	roleUnsure
)

// classify says what the lease loop makes of the latest report. Only a
// complete report (recovery state read) can say "writable"; when it could
// not, standby.signal decides before anything else the report says, so
// that a replica whose identity query timed out is never taken for a
// primary and fenced. A complete report that says writable wins over
// standby.signal: PostgreSQL accepting writes is a fact, and a writable
// server must keep renewing or be fenced, whatever files lie around.
func classify(r *pgdrv1.HealthReport, fenced bool, standbySignal bool) leaseRole {
	known := r != nil && r.Connectable && !r.RecoveryUnknown
	writable := known && !r.InRecovery
	switch {
	case fenced && writable:
		return roleFencedLive
	case fenced:
		return roleFenced
	case r == nil:
		return roleWait
	case writable:
		return roleMaybe
	case standbySignal:
		// Running but not answering (a replica replaying before it is
		// consistent refuses connections), or answering without saying
		// whether it is in recovery: standby.signal says what it is.
		return roleNotPrimary
	case known && r.InRecovery, !r.PostmasterAlive:
		return roleNotPrimary
	case r.Connectable && r.RecoveryUnknown:
		return roleUnsure
	}
	return roleMaybe
}
