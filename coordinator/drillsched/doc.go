// Package drillsched is the pure decision of the coordinator's restore
// drills (issue 17): whether a drill of a cluster may start now, on which
// node, and which drill in flight is over its timeout. The Raft leader
// carries the decisions out (coordinator/server/drill.go) as intent ->
// steps -> result through RecordDrillRun, resumable by the next leader;
// the agent side is agent/drillrun.
package drillsched
