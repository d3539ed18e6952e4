// Package fsm owns the coordinators' replicated state machine: the
// hashicorp/raft FSM that turns committed log entries into the pgdr State
// (clusters, members, the current primary and its epoch, policies, the
// coordinator voters and the audit history), the snapshot format that
// streams that State whole, and the helpers the server uses to build and
// encode the commands it proposes.
//
// Every Raft log entry is one pgdrv1.Command: a CommandType, a protobuf
// payload, the proposer's timestamp and the actor who asked. Apply decodes
// the envelope, looks the type up in a registry of appliers and runs the
// applier against the State. Apply never reads the clock: every timestamp in
// the State comes from Command.time, so that all coordinators that apply the
// same log end with byte-identical State.
//
// Apply distinguishes three failures, following Consul's experience
// (hashicorp/consul#2889):
//
//   - A domain rejection (cluster not found, epoch mismatch, bad name, ...)
//     is a normal outcome: Apply returns an ApplyResult with ok=false and the
//     State unchanged except last_index. Every node rejects the same command
//     the same way, so nothing diverges.
//   - An entry that cannot be decoded (a corrupt envelope, or a payload that
//     does not decode as the message its known type names) panics: carrying
//     on would let this node's State drift from its peers'.
//   - The unknown-command rule: a command type this binary does not know is
//     written by a newer coordinator during a rolling upgrade. If the
//     proposer set ignore_if_unknown, the type is an optional extension that
//     older nodes may skip: Apply logs a warning and returns ok=false with
//     the State unchanged except last_index. Otherwise Apply panics with a
//     message asking the operator to upgrade this coordinator, because
//     skipping a command the others applied would silently diverge. The
//     leader is expected to gate new types on every voter's version before
//     proposing them.
package fsm
