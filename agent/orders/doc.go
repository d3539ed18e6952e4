// Package orders carries out the coordinator leader's orders on this
// node: promote, follow, fence, rejoin, set_synchronous, demote and
// restart.
//
// # What it owns
//
// The Executor takes one order at a time (Executor.Order; Hold keeps the
// next from starting): it refuses an order without an epoch or older than
// the highest epoch seen, times it against the leader's clock (the
// order's budget counted from its receipt, less its transit time as a
// measurement of the leader's clock bounds it: orderDeadline), refuses it
// once its deadline has passed, adopts its epoch only once it is
// accepted, and dispatches it by kind: follow (re-point a replica),
// rejoin (pg_rewind, or a fresh copy through Deps.Reclone when it cannot
// rewind), fence (through Deps.Fence), set_synchronous (applied before
// the deadline or not at all), demote (a clean fast shutdown after a
// checkpoint, reporting the shutdown checkpoint's end) and restart (the
// undo of a demote). The Promoter carries out promote: the failsafe's
// consent (Deps.Failsafe), the epoch confirmed with the leader right
// before pg_promote, pg_promote's wait bounded by the deadline on both
// clocks, the settle promise (the give-up time handed to the promotion
// guard, Deps.Guard, before pg_promote), and the watch of a promotion
// left pending (Promoter.Watch), which fences the node when the
// coordinators moved on or its give-up time passes without a lease.
// It also owns the quoting of values for SQL (quoteLiteral) and for the
// configuration files (confQuote), and the recovery settings a replica
// is started with (WriteStandbyConfig).
//
// What it needs from the rest of the agent arrives in Deps: the session's
// client (the Epoch call), the monitor (CheckNow), the lease (Granted),
// fencing (Fence, Unfence), the promotion guard, the failsafe and the
// re-clone, as interfaces or funcs declared here; it imports agent/epoch,
// agent/leaderclock, agent/pgctl and agent/watchdog (for the give-up time
// and the clocks it is judged on), and no other capability package.
//
// # What it must never do
//
// Never promote (nor restart a stopped former primary) without
// confirming the order's epoch with the coordinator leader right before
// pg_promote (or the start): the leader must still record this node as
// the primary at that epoch, and the sender, when it answers, must still
// wait for the order. Never carry out an order past its deadline, on the
// agent's monotonic clock or on the leader's. Never carry out two orders
// at once. Never promote a fenced node, or a guarded promotion whose
// give-up time the guard did not take. Never echo a DSN (it may hold a
// password) in an error.
package orders
