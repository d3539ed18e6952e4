// Package compliance measures a cluster's recovery against its targets:
// archive RPO per repository and failover RPO against the RPO target, the
// last failover's or switchover's measured duration against the failover
// target, the last drill's restore time against the RTO target. It holds
// the pure parts: the targets and their defaults (Targets), the breach
// decision (Decide), the failover/switchover durations read from history
// (Recoveries), and the bounded set of open breaches that turns repeated
// decisions into one start and one clear per breach (Open). The leader
// (coordinator/server) gathers the measurements and carries them out.
// See docs/rto-rpo.md.
package compliance
