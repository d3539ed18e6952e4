// Package lease is the primary's side of the primary lease: the agent
// renews it through the coordinator leader every failover.loop while its
// PostgreSQL is (or may be) a writable primary, and fences PostgreSQL
// (fast shutdown, and a marker in the data directory) when the lease is
// lost: at its deadline, or at once when the leader names another primary
// or a newer epoch.
//
// # What it owns
//
// The lease itself (Lease: a pure state machine on the caller's clock,
// whose comment holds the timing argument), held under a mutex of its own
// by Holder, which the failsafe (agent/failsafe) reads as its Lease; the
// renewal loop (Keeper.Run) with its own connection to the leader when no
// session is up, and Keeper.Kick, which runs its next round at once (the
// daemon kicks it when the node turns primary, so that the promotion's
// first grant, which /primary waits for, is asked for without waiting up
// to a loop); what the loop makes of the latest report (classify);
// fencing and unfencing (Keeper.Fence, Keeper.Unfence) with the fenced
// marker and the pgdr_agent_fenced gauge.
//
// # What it must never do
//
// Never let PostgreSQL serve writes past the lease deadline (extended only
// by the failsafe, through the Failsafe it is given): the agent fences at
// the deadline, measured from the instant the last granted renewal was
// SENT, never from its answer, and a lease never moves backwards; never
// fence a node on a report that could not say whether it is a primary
// (only the deadline fences such a node); never start PostgreSQL again
// once fenced (only a rejoin clears the marker). What it needs from the
// rest of the agent (the session, the latest report, the epoch, stopping
// PostgreSQL, the failsafe, the watchdog) arrives as the narrow interfaces
// and funcs of Deps; it imports no other agent capability but agent/health
// (the report and the fenced marker).
package lease
