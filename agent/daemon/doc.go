// Package daemon is `pgdr-agent run`: the long-lived agent next to one
// PostgreSQL server, and the composition root of the agent's capabilities
// (docs/agent.md).
//
// It builds the capabilities and wires them to each other (wire.go): the
// health loop (agent/monitor), the session with the coordinator leader
// (agent/session), the orders (agent/orders), the primary lease and
// fencing (agent/lease), the failsafe (agent/failsafe), the process
// watchdog and promotion guard (agent/watchdog), the re-clone
// (agent/reclone) and the role-change hooks (agent/hooks). Each receives
// what it needs from the others as the interfaces and funcs it declares;
// where a capability's value or method satisfies them it is passed as it
// is, and the few adapters left in wire.go translate types that differ.
// Run starts every loop in one errgroup, which stops when its context
// ends.
//
// It also serves what belongs to no capability: it ships WAL (one
// Shipper, so repository connections stay warm, pushing ready WAL
// segments ahead of archive_command) for the one-shot commands that hand
// their work to it over a local unix socket (agent/agentsock), the HTTP
// probes (/health, /ready, /primary, /replica; a report older than a few
// intervals fails every probe, /primary follows the lease and the
// failsafe), /failsafe and /metrics on health.listen, and, with
// gossip.bind, membership of the memberlist pool.
//
// # What it must never do
//
// Hold a capability's state or make its decisions: a new capability is a
// package of its own (docs/agent.md), built in wire.go and started in Run,
// never more methods on Daemon. Nothing but agent/cli imports it.
package daemon
