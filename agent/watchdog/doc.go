// Package watchdog is the process watchdog (failover.watchdog, default true with
// coordinator.addresses): a stalled agent must not let its PostgreSQL
// write past the lease the coordinators granted.
//
// The agent's own fencing deadline lives in the agent process: stopped
// (SIGSTOP), starved (a GC death spiral, swapping) or stuck in a syscall,
// it never fences, and PostgreSQL goes on taking writes after the leader
// considers the lease expired and promotes another node. So the daemon
// runs a child process, `pgdr-agent watchdog --config F`, and writes it a
// heartbeat line on its stdin every time the lease loop evaluates the
// lease (every failover.loop):
//
//	{"remaining_ms": N, "grace_ms": G, "mono_ns": T, "epoch": E}
//
// remaining_ms is the time left until the daemon's current fencing
// deadline D (the lease's, extended by failsafe), rounded down; 0 means
// there is nothing to guard (not a primary: in recovery, stopped, already
// fenced, no report yet); negative means D has passed. mono_ns is
// CLOCK_MONOTONIC read just BEFORE remaining_ms was measured. The child
// sets its own deadline on its own monotonic clock: its receipt time plus
// remaining_ms minus the heartbeat's age (its CLOCK_MONOTONIC at receipt
// minus mono_ns; 0 where that clock cannot be read), plus grace_ms. Wall-
// clock steps change nothing: only intervals on monotonic clocks count.
// The one exception is a guarded promotion's give-up time
// (Guard, guard.go), which the heartbeat also carries on the wall clock
// and CLOCK_BOOTTIME (give_up_wall_ns, give_up_boot_ns): the child fences
// when either reaches it plus grace_ms, earlier than its monotonic
// deadline after a VM pause, or a forward step of the wall clock (early:
// the safe direction).
//
// grace_ms, G = min(safety_margin/4, 250ms), lets a running agent fence
// first, at D, with its fast shutdown and its own reason: without it the
// watchdog's deadline would coincide with D, and every ordinary loss of
// the lease would be pre-empted by the watchdog's immediate shutdown and
// marked "agent stalled". The watchdog is the backstop, for an agent that
// did not act at D.
//
// When the child's deadline passes with no newer heartbeat replacing it,
// the child fences PostgreSQL itself (`pg_ctl stop -m immediate`, as the
// data directory's owner when root; SIGQUIT to the postmaster if pg_ctl
// cannot run), writes the pgdr.fenced marker ("watchdog: agent stalled
// ...", keeping a marker the agent already wrote) and exits. The newest
// heartbeat always wins, so a heartbeat saying 0 disarms it (a demoted or
// fenced node).
//
// Why a stalled agent cannot let PostgreSQL write past the coordinators'
// lease expiry. Let D be the daemon's deadline when it builds a heartbeat,
// m0 the instant it reads mono_ns and m1 >= m0 the instant it measures
// remaining = D − m1 (rounded down, so <= D − m1). The child receives it
// at r >= m1 and sets C = r + remaining − (r − m0) + G = m0 + remaining +
// G <= m0 + D − m1 + G <= D + G: the child's deadline is never later than
// the daemon's plus the grace, however long the line sat in the pipe (a
// child that reads a stale heartbeat late fences at once rather than
// late; a heartbeat built after D says so, remaining_ms < 0, and the child
// fences on receipt, without grace). Without the age correction (a
// platform without a shared monotonic clock) C exceeds D + G by the pipe's
// transit time only, microseconds for a child that is running. The agent lease's
// proof gives D < E − f for the leader's expiry E of the lease, where f,
// the time fencing takes to stop writes, is budgeted out of the safety
// margin M (with T = 5s, M = 1s and clock drift of a few hundred ppm,
// almost a second; failsafe's extension keeps the same bound against each
// member's refusal window, agent/failsafe). The watchdog spends G <= M/4 of
// that budget waiting and stops writes with an immediate shutdown, whose
// f_w is a signal to the postmaster, which SIGQUITs every backend at once
// (milliseconds): C + f_w <= D + G + f_w < E whenever G + f_w fits the
// budget, which M/4 + milliseconds does. Later heartbeats only ever carry
// the daemon's then-current D. So whatever happens to the agent after its
// last heartbeat, PostgreSQL stops writing before E: a stalled, crashed or
// killed agent is covered as long as the watchdog process runs. The
// watchdog uses an immediate shutdown (no shutdown checkpoint: crash
// recovery at the next start, which WAL makes safe) because at C there is
// no slack left to wait for backends to exit and a checkpoint to finish,
// as a fast shutdown does; never a smart one, which lets open sessions
// keep committing.
//
// Lifetime. The child is started with the current executable and its own
// process group (a terminal's ^C/^Z to the agent's group does not reach
// it), and deliberately without Pdeathsig: it must outlive a crashed
// agent. When its stdin closes (the daemon exited) or it gets SIGTERM or
// SIGINT, it exits at once if the last heartbeat said there is nothing to
// guard, and otherwise keeps the deadline and fences when it passes:
// the lease the stopped agent no longer renews expires on the leader,
// which then promotes another node. SIGUSR1 makes it stand down without
// fencing: a restarted daemon sends it to the previous daemon's watchdog
// (its pid is kept in agent.socket + ".watchdog.pid") once its own
// watchdog guards the primary under a lease granted to it, so an agent
// restart does not fence a healthy primary. The daemon restarts its
// watchdog whenever it ends.
//
// # What it owns
//
// The parent's side (Watchdog: the child's command, starting it and
// starting it again, the heartbeat built from the lease loop's deadline
// (Beat) and a guarded promotion's give-up time, the pid file and the
// previous daemon's orphaned watchdog, which it relieves with SIGUSR1);
// the child's side (RunChild, which `pgdr-agent watchdog` runs: its timer,
// Timer, a pure type, and its own fencing with an immediate shutdown); the
// give-up clocks (Clocks, GiveUpTime: CLOCK_MONOTONIC, the wall clock and
// CLOCK_BOOTTIME, the earliest counting, for VM pauses and suspensions);
// and the promotion guard (Guard: the pending promotion's record in pgdata,
// PendingFile, guarding, ending, restoring and resuming it). The pending
// promotion watcher that fences at the give-up time is the promoter's: the
// guard hands it what Resume finds.
//
// # What it must never do
//
// Never let a pending promotion outlive its give-up time without a granted
// lease: the guard reaches the watchdog's heartbeat before Guard returns
// (an error otherwise: pg_promote must not be called), is written to
// pgdata before it, and is ended only by Unguard (lease granted, fenced,
// or PostgreSQL stopped) or restored to the earlier guard when the
// watchdog did not take it. Never let PostgreSQL serve past the lease
// deadline plus the grace when the agent stalls: a heartbeat never gives
// the child a later deadline than the daemon's (mono_ns read before
// remaining_ms, rounded down), the newest heartbeat always wins, and the
// child keeps guarding after the agent's exit or a SIGTERM. Never relieve
// a previous daemon's watchdog before this one's child got a heartbeat
// with a deadline under a lease granted to this agent, the same guard, or
// the lease loop's word that there is nothing to guard. It reads the lease and the epoch
// through the narrow Lease and Deps it is given, controls PostgreSQL only
// through agent/pgctl, and imports no other agent package but agent/health
// and agent/pgctl.
package watchdog
