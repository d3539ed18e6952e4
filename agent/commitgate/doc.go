// Package commitgate is lease-gated commits (failover.lease_gated_commits):
// the primary's own agent sits on the synchronous commit path as a
// replication client of its local PostgreSQL, and acknowledges WAL only
// while the primary lease is valid, so that no commit is acknowledged
// after the lease expired (invariant 13), even when PostgreSQL, the agent
// and the watchdog were frozen together and resumed.
//
// # How
//
// The gate connects to the local server with replication=true and
// application_name pgdr_gate, runs START_REPLICATION PHYSICAL from the
// server's current position (no slot: it keeps no WAL and needs none
// kept), discards what it receives, and sends standby status updates
// whose write, flush and apply positions are the end of what it received
// — only when, read right before the send, the lease is valid by the
// monotonic clock (Lease.Serving: granted, not fenced, before
// D = s + lease_ttl - safety_margin, s the instant the last granted
// renewal was SENT; agent/lease), extended only by the failsafe (every
// member acknowledged, agent/failsafe). While the lease is not valid its
// replies (periodic ones and answers to the server's keepalives, which
// keep the walsender from timing out) repeat the last acknowledged
// position and never advance it. PostgreSQL's synchronous_standby_names
// names the gate alone (GateSetting), so every commit waits in SyncRep
// until the gate's flush position passes its commit record.
//
// Fail safe: a gate that dies, is killed (kill -9) or whose walsender is
// terminated leaves PostgreSQL waiting for a synchronous standby that is
// not connected: commits wait, none proceeds ungated. Run reconnects, and
// a reconnected gate still acknowledges only under a valid lease. After a
// promotion the setting is already there (the gated set_synchronous order
// writes it on the standby before it is promoted, and the gate settles it
// at every connection), so the new primary's first commits wait until the
// gate is connected and the first lease is granted.
//
// # Composition with synchronous mode
//
// PostgreSQL 15 cannot say "the gate AND FIRST 1 (a, b)": FIRST 2 (gate,
// a, b) lets a+b through once the gate is gone, and ANY n cannot require
// one particular member. So while gating, PostgreSQL's own setting is the
// gate alone and the coordinator's value (what set_synchronous asked for)
// is kept in the custom setting pgdr.synchronous_standby_names
// (RequestedGUC, in postgresql.auto.conf). The gate enforces it itself.
// It reads the requested value at most every second by itself (a change
// by hand counts within that), and at once when a set_synchronous order
// asks (Refresh: the order is reported done only after the gate read the
// new value, as PostgreSQL's own setting counts once SHOW gives it). With
// standbys required, while it holds WAL it has not acknowledged it reads
// pg_stat_replication on the local server every few milliseconds (Poll)
// and acknowledges no further
// than syncnames.Required gives for the requested FIRST n / ANY n over the
// walsenders other than itself — PostgreSQL's own rule (streaming, with a
// flush position, named; FIRST: the lowest flush of the n
// highest-priority ones; ANY: the n-th highest flush). So a commit is
// acknowledged only when the lease is valid AND the required standbys
// flushed it. What reads the setting still sees the coordinator's:
// the health report shows RequestedGUC as the node's
// synchronous_standby_names, leaves the gate out of the replicas and
// gives their sync_state by the requested value (agent/health), which
// is what the coordinator's synchronous-mode planner and candidate rule
// read. A client that cancels its wait (statement_timeout, a cancel
// request) gets PostgreSQL's usual WARNING "canceling wait for
// synchronous replication ... already committed locally": that commit
// was not acknowledged by the gate, and clients must not take it as
// acknowledged (as with any synchronous standby).
//
// # The safety argument
//
// Let D be the lease deadline the gate reads (as above) and E the
// instant the coordinator leader treats the lease as expired; agent/lease
// shows D < E in real time with clock rates off by at most rho, leaving
// margin for fencing. The gate advances its acknowledgement only by a
// send that follows a reading t < D of the monotonic clock, and it
// acknowledges only WAL it received before that reading.
//   - A commit whose record PostgreSQL writes after the lease expired is
//     never acknowledged: its WAL reaches the gate after the reading
//     that would let it through, and every reading from then on is >= D.
//     This holds whatever else is frozen: the gate does not depend on
//     the agent's lease loop, the watchdog or the fencing having run;
//     it reads the clock itself before every acknowledgement.
//   - The frozen-and-resumed case: SIGSTOP of PostgreSQL, the agent (the
//     gate runs in it) and the watchdog together, resumed after E. Commits
//     in flight at the freeze (WAL not yet acknowledged) and the WAL that
//     PostgreSQL writes and sends after resuming reach a gate whose next
//     clock reading is past D (the monotonic clock counts the time
//     stopped; a suspended VM's CLOCK_MONOTONIC may not, which is the
//     watchdog's boottime check and the residual below): it withholds
//     them; they wait until the resumed agent fences the node.
//   - Synchronous mode: an acknowledgement is also bounded by
//     Required over the walsenders the gate read after the WAL arrived,
//     so a commit acknowledged to a client is on the required standbys
//     (invariant 7 as before), and on no fewer than PostgreSQL itself
//     would wait for.
//
// The residual window, stated honestly. (1) A freeze that lands between
// the gate's clock reading (t < D) and its send, or after the send but
// before PostgreSQL's walsender processed the reply and released the
// waiting backends (and the backends answered their clients), lets
// commits whose WAL the gate received before t be answered after the
// resume, possibly after E. The window's width is the few microseconds
// from the reading to the reply's write(2) on the gate's side plus
// PostgreSQL's wake-up of the waiters; the freeze must also last longer
// than E - t > E - D (about safety_margin, 1 s by default) to matter,
// since an answer sent before E is an answer under a valid lease.
// Only commits whose record was written before D are exposed, never one
// written after the lease expired, and in synchronous mode those are on
// the required standbys anyway, so nothing acknowledged is lost; in
// asynchronous mode they may be lost with the old primary. (2) The
// monotonic clock must count the freeze: CLOCK_MONOTONIC does for
// SIGSTOP; for a suspended VM it may not (boottime does), which is the
// watchdog's own caveat. (3) Anything else that can connect with
// replication rights and name itself pgdr_gate can acknowledge; keep
// replication rights to the agent and standbys.
//
// # What it must never do
//
// Never advance its acknowledged position without reading the lease as
// valid right before the send; never acknowledge WAL it did not receive,
// nor past what the requested synchronous standbys flushed; never change
// PostgreSQL's setting to anything that does not wait for it while gating
// is on. It imports no agent package: the lease arrives as Lease.
package commitgate
