// Package epoch is the highest coordinator epoch this agent has seen: from
// its registration with the leader, the leader's answers (lease renewals,
// Epoch calls) and the orders it accepted.
//
// It owns that one number and its lock. The lease loop, the orders, the
// failsafe, fencing, the health checks, the watchdog heartbeat and the
// coordinator session read and raise it through one Tracker the daemon
// builds and hands to each.
//
// It must never let the epoch go back: an agent that forgot a newer epoch
// would take an older leader's order (or a deposed primary's failsafe
// ping) as current. Whether an epoch may be adopted (an order refused as
// stale or expired must not raise it) is the caller's decision, not this
// package's; it imports nothing of the agent.
package epoch
