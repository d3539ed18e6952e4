// Package leaderclock is the agent's knowledge of the coordinator leader's
// clock: the last measurement of it (the leader's reading in the answer to
// a call, against the agent's clock around that call) and the skew, the
// agent's clock minus the leader's, as last measured.
//
// It owns that state, its lock, the skew's warning (logged once, then
// again after a while or once the clocks agreed in between) and the
// pgdr_agent_leader_clock_skew_seconds value, set through a Gauge the
// daemon passes in. The coordinator session measures the leader's clock
// when it registers and at every leader check (Note) and forgets it when
// it ends (Forget); orders read the measurement (Last) to take the time an
// order spent in transit off its budget (Measurement.Latest).
//
// It must never lengthen an order's budget: Latest counts the time since a
// measurement on the agent's monotonic clock, or on its wall clock when
// that counts more, so that no step of either clock makes the leader's
// clock seem to read earlier than it can. The skew is for the metric and
// the warning only; nothing may decide on it. It does not read the clock
// the orders' deadlines are counted on: the caller passes its readings in
// (the daemon's tests replace that clock). It imports nothing of the agent.
package leaderclock
