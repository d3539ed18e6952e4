// Package monitor is the agent's local health loop: a round of
// agent/health checks every health.interval, and the latest report.
//
// # What it owns
//
// The latest report (Monitor.Latest) and the rounds that replace it
// (Monitor.Run, and Monitor.CheckNow for a round at once); the
// "reported" signal after every round, which the coordinator session
// waits on to stream reports; the log line on every change of role or
// health; and the command echo: the commands the session received last
// and when (Monitor.Received), so that every report names the latest one
// received before its checks began (HealthReport.after_command_id).
// What others add to a report (the failsafe's annotation) and who hears
// of a new one (the role-change hook) arrive as funcs in Deps.
//
// # What it must never do
//
// Never name in a report a command received after its checks began (the
// server may have changed in between); never let an older round's report
// replace a newer one (rounds are ordered by when they began, never by
// the wall time in their reports, which steps back with the clock); never
// block a round on whoever hears of it. It decides nothing about the
// server: it observes and reports, and imports no other agent capability.
package monitor
