// Package incident owns the incident model and the pure decisions about it:
// opening an incident for a signal the Raft leader already sees (a failover,
// a refused failover, fencing, lost quorum, a failed backup or drill, a
// target breach, repository copy lag) or for an operator, folding repeats of
// the same condition into the open incident with the same dedup key, marking
// a condition cleared, acknowledging and resolving, escalating unacknowledged
// incidents level by level, and compacting the state so it stays bounded.
//
// Every decision is a function of a State and its inputs with no I/O, no
// clock (the caller passes now), no randomness and no dependence on map
// iteration order: the same inputs give the same State. Identifiers are
// derived from a sequence the caller passes (the Raft index of the command
// that opens the incident), so every coordinator applying the same log
// computes the same ids. The functions never modify the State they are
// given; they return a new one, and on error the State is unchanged.
//
// # Rules
//
//  1. Observe opens an incident for a signal's dedup key unless one with that
//     key is open or acknowledged; then the signal folds into it: its
//     occurrence count and last-seen time move, its severity is raised if the
//     signal is more severe, and at most one timeline entry is added per
//     distinct message within Limits.RepeatWindow. A signal for a key whose
//     incident is resolved opens a new incident.
//  2. Clear marks the condition cleared; the incident stays open.
//     AutoResolve resolves a cleared incident only when the policy names its
//     category and the condition has stayed cleared for the hold time. A
//     repeat of the condition before then un-clears it.
//  3. Ack moves open → acknowledged, Resolve moves open or acknowledged →
//     resolved with a note. Any other transition is refused with an error
//     naming the incident and its status (ErrTransition).
//  4. Escalate moves each open, unacknowledged incident one level up when it
//     has waited its current level's timeout since it was opened or last
//     escalated, and records the move on the timeline. The last level is not
//     exceeded. Only acknowledgement or resolution stops escalation: a
//     cleared condition nobody acknowledged still escalates. Because the wait restarts at the escalation time, running
//     Escalate twice at the same now escalates once: a new leader replaying
//     it does not notify twice.
//  5. Compact drops resolved incidents beyond a count or older than an age
//     (oldest first), never an open or acknowledged one. Every timeline is
//     capped at Limits.MaxTimeline entries, keeping its first entry and the
//     newest ones (every decision that appends applies the cap, so the state
//     stays bounded between compactions), and notes beyond Limits.MaxNotes
//     are refused (an acknowledgement's or resolution's note at the limit
//     is kept on the timeline only: an incident can always be resolved).
//  6. Due is the leader's outbox: every escalation level reached but not
//     notified yet is sent the incident's status, and when the status
//     changed every level already notified is sent the new one; the Mark
//     it returns is recorded once they went out, so that a new leader sends
//     what the old one did not record, and a send's ID is the same for
//     whichever leader computes it (receivers drop a repeat).
//
// Storing the State in the replicated state, the notifiers and the pgdrctl
// commands belong elsewhere; the types use plain fields so they map onto
// protobuf messages one to one.
package incident
