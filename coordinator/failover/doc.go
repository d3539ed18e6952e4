// Package failover owns the automatic failover decision: given what the Raft
// leader knows of one cluster right now (its recorded primary, that
// primary's lease, every member's latest report and the cluster's policy),
// Decide says whether to do nothing, to wait, to promote one named
// replica, or to order the recorded primary (still a replica) to promote
// again, and why. It is a pure function: no I/O, no clock (the caller
// passes Now), no randomness, no dependence on map iteration order, so the
// same Input always gives the same Decision and the table test can read like
// a list of incidents. Carrying a promotion out (recording the intent,
// ordering the agent, re-pointing replicas) belongs to the leader loop.
//
// # The rules, in order
//
//  1. No primary recorded: none. There is nothing to fail over from (a
//     cluster being bootstrapped, or one whose primary was removed).
//  2. The primary's member is healthy (PrimaryHealthy: a fresh report, the
//     postmaster alive, connectable, not in recovery, not fenced): none.
//     2a. The primary's member is a running replica (UnpromotedPrimary: a
//     fresh report, the postmaster alive, connectable, in recovery, not
//     fenced) and is not known to have completed its promotion at this
//     epoch (Input.PrimaryPromoted): it was recorded as primary but never
//     promoted (its order was lost or failed, or the leader died first). Repromote it at the
//     current epoch, whatever its lease and min_interval: no other member
//     is chosen, so a failed order never leaves the cluster without a
//     primary (in synchronous mode no other member may even qualify, the
//     old primary being in the recorded set). None when it refuses
//     promotion (failsafe) or the cluster is paused, saying why. The
//     leader rate-limits the orders.
//  3. The cluster is paused (maintenance mode): none. The unhealthy primary is
//     reported in the reason, not acted upon.
//  4. The primary's lease has not expired yet (Now < LeaseExpiresAt): wait,
//     naming the time left. See "Why waiting for the lease is enough".
//  5. A failover happened less than Policy.MinInterval ago: none (the
//     flapping guard), naming when the next one may happen.
//  6. Every member other than the primary is judged. A candidate has a fresh
//     report, a running and connectable postmaster, is in recovery, is not
//     fenced, is not tagged "no-failover", does not refuse promotion, is on
//     the highest timeline among fresh replicas, lags the primary's last known
//     LSN by at most Policy.MaxLagOnFailover (0 means 1 MiB; an unknown
//     primary LSN rejects every member unless forced) and, in
//     synchronous mode, is a synchronous standby. Every other member gets one
//     specific reason in Decision.Rejected (the first failed check in that
//     order).
//  7. If a fresh member refuses promotion (it acknowledged the primary's
//     failsafe ping within the lease TTL) the primary is still serving under
//     failsafe: none, "primary alive per X's failsafe acknowledgement". This
//     wins over any candidate.
//  8. Otherwise the best candidate is promoted: highest ReceiveLSN, then
//     higher Priority, then the earlier region in Policy.PreferredRegions
//     (unlisted regions after listed ones), then name ascending. With no
//     candidate: none, "no candidate: " and every rejection in name order.
//
// Lag is PrimaryLastLSN − ReceiveLSN (0 when the replica received past it).
// PrimaryLastLSN is the highest LSN the primary reported while writable at
// this epoch; a report without an LSN (its PostgreSQL is down while its
// agent still reports) never lowers it. When it is unknown (0) the lag
// cannot be checked, and every member is rejected with UnknownPrimaryLSN
// unless Input.Forced (an operator's manual failover with --force): taking
// "unknown" for "no lag" would let a replica far behind be promoted and
// everything the primary acknowledged since be lost. Any Policy.Synchronous other
// than "" and "off" (that is "on", "quorum N", or a value this package does
// not know) counts as synchronous mode: requiring a synchronous standby can
// only cost availability, never an acknowledged commit.
//
// Only fresh members' refusals count for rule 7. A stale report's refusal
// says nothing about now, and honouring it would let one dead member (say,
// one lost with the primary's region) block failover forever. Safety does not
// depend on it: a candidate must itself be fresh and not refusing, that is it
// has not acknowledged the primary's failsafe ping within the TTL, and a
// primary keeps serving under failsafe only while every member acknowledges,
// so that primary fences at its deadline.
//
// # Why waiting for the lease is enough
//
// The primary's agent renews its lease through the leader. For each renewal
// it notes, on its own monotonic clock, the instant S it sent the request;
// once the renewal is acknowledged it may serve until S + ttl − margin and
// fences its PostgreSQL (fast shutdown or read-only restart, and /primary
// stops answering 200) at that deadline unless a later renewal succeeded.
// The leader sets LeaseExpiresAt = R + ttl, where R is when it received that
// same request on its own clock. A request is received after it is sent
// (R ≥ S), so the old primary's fencing deadline S + ttl − margin falls at
// least margin before LeaseExpiresAt; margin absorbs the drift between the
// two hosts' clock rates over one ttl (both measure a duration from a local
// instant, so wall-clock offsets do not matter). A promotion ordered at or
// after LeaseExpiresAt therefore starts strictly after the old primary
// stopped accepting writes: never two writable primaries, even when the old
// primary is alive but cut off. A leader newly elected that cannot know when
// its predecessor last granted the lease must pass LeaseExpiresAt no earlier
// than its own takeover + ttl; the epoch carried by every order makes a
// demoted leader's late orders void.
package failover
