// Package runbook owns the coordinator's executable runbooks (issue 19,
// part 4): business-continuity procedures written as YAML (Parse), checked
// with errors naming the field (Validate, Resolve), planned without
// changing anything (DryRun), and executed by the Raft leader one step at
// a time through a pure decision (Next) over a plain snapshot of the
// cluster (View) and the run's replicated record (RunState).
//
// The leader carries a decision out the way failovers are carried out:
// it records the decision in the run (Apply, through Raft), then sends the
// order (switchover, pause, backup, ...), then records its outcome
// (Outcome). A new leader finds the run with a step "running" under an
// older leadership and Next judges that step from the View (see judge in
// next.go for the rule of each action): a step's effect that is already
// there is taken as done, an idempotent action (pause, resume, notify) is
// sent again, and a non-idempotent one (switchover, backup, drill,
// command) is never sent twice: without evidence of its effect the step
// fails and the run rolls back. So a step runs at most once across leader
// changes and a failed validation rolls back the completed steps in
// reverse (ARCHITECTURE.md invariant 12).
//
// The package does no I/O and holds no mutable package state; the shipped
// runbooks (Builtin) are embedded YAML under builtin/. The format is
// documented in docs/runbooks/format.md.
package runbook
