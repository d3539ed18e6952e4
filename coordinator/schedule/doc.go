// Package schedule owns the backup scheduler's decision: given what the
// Raft leader knows of one cluster right now (the effective backup policy,
// the recorded runs, the members' health and the pause flag), Decide says
// whether to do nothing, to start one run (tier, type, node, slot), to
// record a skipped slot, or to cancel the run in flight because it
// outlived its timeout, and why. Like coordinator/failover it is a pure
// function: no I/O, no clock (the caller passes Now), no randomness and no
// dependence on map order, so the table test reads like a list of
// incidents. Recording the run in Raft and ordering the agent belong to
// the leader's loop (Runner, with the server behind the Cluster interface).
//
// # The rules, in order
//
//  1. The cluster is paused (maintenance mode): nothing is scheduled, not
//     even the cancellation of a run that outlived its timeout; the
//     leader resumes with the first tick after Resume. Only a run
//     cleaning up past its clean-up deadline is ended (End), as below.
//  2. A run is in flight (recorded intent, no result): never a second
//     backup of the cluster. A run on a member no longer in the cluster
//     (Input.Known) ends at once (End, "cancelled"). A run cleaning up
//     after its cancel order waits until its clean-up deadline (CleanupBy,
//     else CancelAt + Input.Cleanup), then ends with its cancel's result
//     (End). When Now is past the run's Due (the Runner's deadline on its
//     own clock; else start + timeout) + Grace: Cancel (record the step
//     "cancel", send a cancel order); otherwise wait for it.
//  3. Which tiers are due is policy.Due over each tier's last recorded
//     run (its start; scheduled, manual, failed or skipped alike): a tier
//     is due once however many slots were missed, so after an outage one
//     catch-up run is made, not one per missed slot. A tier that never
//     ran counts from the policy's time, or, for the defaults (which have
//     none), from Input.Since (the cluster's creation). One run at a time:
//     the tier due since the oldest slot goes first, a full before a diff
//     before an incr on the same slot, so that a tier whose runs outlast
//     its interval cannot starve the others.
//  4. A diff or incr tier runs as a full when no successful full backup is
//     known (none among the recorded runs, and Input.FullKnown false):
//     there is nothing to base it on. The reason says so.
//  5. Placement by the tier's run_on: prefer-standby takes the healthy,
//     connectable, unfenced replica with the least lag (then by name), else
//     the primary; standby-only takes such a replica or records the slot
//     as skipped (result "skipped", with the reason), so the slot is not
//     retried every tick; primary takes the recorded primary. When
//     prefer-standby or primary finds no healthy member the tier stays due
//     and waits (the run is made once, when a member is back).
//
// A failed, timed-out or skipped run counts as the tier's last run: the
// tier runs again at its next slot, not in a loop every tick. A run that
// never started (ResultNotStarted) does not: the tier is tried again
// after Input.Retry, doubled for each further such run since the tier's
// last run (up to MaxRetry), and stays due. Placement prefers a member whose
// agent has its command stream open, then one on the primary's timeline,
// then the least replay lag.
//
// Manual runs (pgdrctl backup run) go through Manual: the same type and
// placement rules, refused with a sentinel error while another run is in
// flight (naming it), for an unknown tier (naming the known ones) or with
// no member to run on. A manual run is allowed while the cluster is
// paused: the operator asks for it explicitly.
//
// # Carrying decisions out
//
// Runner runs on the Raft leader, after its barrier and a warm-up of
// health.stale_after (a new leader has no reports yet, and must not skip a
// standby-only slot for want of a healthy replica). A Start is recorded
// as an intent in Raft (fsm RecordBackupRun), then a Backup order goes to
// the node's agent over its command stream and the step "sent" is
// recorded; the agent's pending answer is the step "accepted", its final
// answer the result (ok or failed, with the backup's id and sizes). An
// order that cannot be written ends the run as not_started at once. An
// answer whose record fails, or that a coordinator that is not the
// caught-up leader cannot place, is an ErrRetry (the agent sends it
// again). When an agent's command stream opens (StreamOpened) its runs in
// flight are ordered again, accepted ones too, with what is left of their
// timeout (a cleaning one gets its cancel again). Deadlines are kept per
// leadership on the Runner's clock: an inherited run gets what was left
// of its timeout at the takeover, within [0, timeout]. Tick and RunNow do
// nothing while Server.Ready says a voter may not know the records.
// Any leader
// records an answer to a run in flight; a new leader orders again, once,
// an inherited run the agent has not accepted (Backup orders are
// idempotent by run id) with only what is left of its timeout (start +
// timeout − now; the agent counts it from the order's arrival), and not
// at all when nothing is left; and Decide cancels a run past its timeout
// and the grace.
package schedule
