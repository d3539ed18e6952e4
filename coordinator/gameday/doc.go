// Package gameday is the pure decision of the coordinator's game days
// (DR test plans, issue 19 part 5): when a game day of a cluster's policy
// starts (a slot passed since its newest recorded slot; missed slots run
// once), which runbook of a game day in flight starts next (each once,
// in order, after the previous one ended done and its probe measure was
// recorded), and when a game day ends (ok, failed, or timeout when its
// window passes). The Raft leader carries the decisions out
// (coordinator/server/gameday.go) through RunbookCommand's game day ops,
// resumable by the next leader: everything it reads is replicated.
package gameday
