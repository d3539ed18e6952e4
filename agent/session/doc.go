// Package session is the agent's session with the coordinator leader.
//
// # What it owns
//
// The connection to the coordinator leader: it asks the configured
// coordinators in turn who leads (Leader), dials the leader over TLS with
// the agent's bearer token (both read afresh for every session, so rotated
// files are picked up without a restart), registers this node (again when
// its system identifier changes), streams every newer health report,
// receives the leader's commands, checks every few seconds that the
// leader still leads, and starts over with jittered backoff when anything
// fails or leadership moves (Session.Run). While a session is up its
// client is published (Session.Client: the lease renews and the orders
// confirm their epoch through it) and the pgdr_agent_coordinator_connected
// gauge reads 1. It also owns the receive queue of commands: each is
// stamped with the agent's clock and noted to the monitor as it arrives
// (reports sampled from then on name it), then handed on in receipt order,
// one at a time; Ping and CheckNow are answered here, orders go to the
// Executor, and every result is sent back (CompleteCommand). A result that
// is known only later (a run that outlives its order) is sent with
// Session.Complete. Dialer is the same leader discovery for the lease
// loop's own connection while no session is up.
//
// What it needs from the rest of the agent arrives as the interfaces of
// Deps (the orders' Executor, the Monitor, the Epoch, the LeaderClock,
// the failsafe's public key, the watchdog) and a gauge; it imports no
// other agent capability but agent/health (the report's body).
//
// # What it must never do
//
// Never carry out an order itself: it hands orders to the Executor in
// receipt order, one at a time, and reports their results. Never send a
// report sampled before a command as if it were sampled after it: a
// command is noted to the monitor at its receipt, before it is queued,
// and the reports carry what the monitor sampled. Never send the bearer
// token over a connection without TLS. Never adopt an order's epoch
// before the Executor accepts it (only Ping's and CheckNow's).
package session
