// Package server is pgdr-coordinator: a hashicorp/raft node (raft-wal log,
// file snapshots, TLS transport) applying typed commands to coordinator/fsm,
// a member of the gossip pool, and the gRPC API (admin, agent and
// coordinator services) with TLS and role-based authentication.
//
// Only the Raft leader keeps agents' health reports (in memory, never in
// the log), streams commands to agents and makes decisions; a follower
// forwards writes and health-dependent reads to the leader. Decisions and
// their outcomes are Raft-committed into the history.
package server
