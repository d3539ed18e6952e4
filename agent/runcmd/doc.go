// Package runcmd carries out the agent's RunCommand orders: a runbook step
// of action command names one of the commands the agent's own config
// lists (commands:), with the step's key. The agent starts it once per key
// in the background (orders are carried out one at a time, and a failover
// order must not wait behind a long command) and answers the order, and
// every repeat of it, with the run's progress (pending) or its result, so
// that the leader polls it and a new leader asking again runs nothing
// twice. The leader's repeats are report_only: a key this agent does not
// have (it restarted since, which killed the run) is refused, never
// started. An order that waited here past its budget is not started. The
// order's timeout_ms (the step's timeout left) bounds the run when it is
// shorter than the command's own. Output is kept valid UTF-8 (the answer
// is a proto string). A bounded number of results is kept.
package runcmd
