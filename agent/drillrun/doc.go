// Package drillrun carries out the coordinator's Drill orders on an
// agent: a restore drill (agent/drill.Run) of one of the cluster's
// backups into a scratch directory, one at a time.
//
// Like agent/backuprun for backups, a Runner answers an order at once
// (pending: the drill runs; the state of a run id it already has; or a
// refusal, marked not_started) and completes the order's command id
// later through the Completer (agent/session's Session.Complete) with a
// bounded summary of the drill's Result (pgdrv1.DrillReport). A run is
// bounded by the order's timeout, counted from the order's arrival; at
// the timeout, or on a cancel order, its context ends and drill.Run
// stops the scratch server and removes the scratch copy before the
// result is delivered. drill.Run refuses a scratch path inside the
// production data directory, and so does every drill this package runs.
package drillrun
