// Package hooks runs the operator's role-change hook (hooks.on_role_change)
// when the node's PostgreSQL changes role: primary, replica, fenced,
// stopped. A hook moves DNS, tells a load balancer, pages someone; it is
// told, through PGDR_ROLE, PGDR_PREVIOUS_ROLE, PGDR_CLUSTER, PGDR_NODE and
// PGDR_EPOCH, what already happened.
//
// It owns the hook's runs: one at a time, bounded by hooks.timeout (the
// whole process group is killed at the deadline), intermediate roles
// coalesced while a run is in progress, the output kept (capped) for the
// log, and pgdr_agent_hook_runs_total{result} counted.
//
// A hook only reports a role change. It must never block the caller
// (Runner.Observe returns at once, whatever the hook does) and never
// decides anything: its exit status, output or timeout do not delay,
// allow or refuse a promotion, a fence or a failover, and nothing here
// feeds back into the agent's state.
package hooks
