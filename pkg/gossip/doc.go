// Package gossip is pgdr's membership pool: one hashicorp/memberlist pool,
// encrypted with a shared key, that every agent and coordinator of every
// region joins. It gives discovery (each node's metadata: kind, name,
// cluster, region, API address) and fast failure detection (alive, suspect,
// dead). It is an input to the coordinators' decisions, never the decider:
// decisions are Raft-committed.
package gossip
