// Package slots decides which pgdr-managed replication slots the
// coordinator leader drops, so that a WAL receiver that stays down does
// not fill a server's disk (issue 21, slot safety).
//
// Decide is a pure function of a view (the members, the slots each
// server reported, since when each slot has been unused, the limits) with
// no I/O, tested by a table like coordinator/failover. The leader
// (coordinator/server/slots.go) keeps the unused-since times in memory
// (a new leader starts them again: it never drops sooner than the limit),
// sends a DropSlot order to the server's agent, which refuses an active
// slot, and records each drop in the cluster's history. A drop is
// idempotent and needs no intent record: a leader that dies between the
// order and the record leaves a slot that is gone (nothing to resume) or
// still unused (the next leader decides again after its own grace); only
// the history line can be missing.
//
// Only slots named like config.ReceiverSlot (prefix "pgdr_") are
// considered; a slot of any other name is the user's and is never
// touched. A managed slot is dropped when it has been seen unused for at
// least Grace and
//   - no registered member's ReceiverSlot name is the slot's (its member
//     was removed), or
//   - it sits on a replica (a receiver streams from the primary; a slot
//     left on a former primary after it was rewound keeps the replica's
//     WAL), or
//   - it has been unused for DropAfter, or keeps more than MaxRetained
//     bytes.
package slots
