// Package slo holds the pure parts of the write-availability SLO: the
// judgement of each second from the newest heartbeat the leader knows
// (Judge), the bounded hourly buckets the judged seconds are kept in over
// the 28-day window and how a batch of them is applied (Apply: a gap no
// leader judged is good where the writer's unbroken run of heartbeats
// covers it, else bad and unobserved; Sum), and
// the ratio and error budget derived from them (Budget). The leader
// (coordinator/server/slo.go) observes the heartbeats in reports, judges
// every cluster once a second, and commits the judged seconds through
// Raft once a minute; the FSM applies them with Apply. See docs/slo.md.
package slo
