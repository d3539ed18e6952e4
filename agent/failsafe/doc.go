// Package failsafe keeps a coordinator outage from taking writes down,
// and must never let it make two primaries (Patroni's failsafe lesson).
//
// While the primary's agent cannot renew its lease because the coordinator
// leader cannot be reached (no leader named, RPC errors, time-outs; NOT a
// refusal from a reachable leader: that ends failsafe mode, and a refusal
// naming another primary or a newer epoch fences at once as before), it
// POSTs a signed failsafe ping every failover.loop to every other member's
// agent (POST /failsafe on health.listen, reached at the member's API
// recorded in Raft). A member acknowledges (200) only when it is
// not the named primary, is not writable (in recovery, stopped or fenced),
// is not being promoted, and the ping's epoch is not older than the epoch
// it knows. Acknowledging records "acked at" (monotonic) and makes the
// member refuse any promotion order from then for T: the larger of its own
// lease_ttl and the one the ping carries (the primary's, or its last
// grant's when smaller: what the primary's window derives from), so that
// members and primary with different lease_ttl settings (a rolling
// configuration change) keep the argument below.
//
// Members: the set the primary needs acknowledgements from is the union of
// every other member recorded in Raft (sent with each granted renewal,
// with its registered api_url; the latest grant's list replaces the one
// before) and every agent of the cluster it ever heard of through gossip
// during this process (dead ones included; the API recorded in Raft wins
// over a gossip-advertised one, which is used only for a member Raft has
// no API for). A member it cannot reach, or whose API it does not know,
// simply never acknowledges, and the primary fences. So a member
// the coordinators could promote is always in the set, even one whose
// agent never joined the primary's gossip view (the coordinators also hold
// back while any fresh member reports a recent acknowledgement,
// failover.Decide). Failsafe needs the gossip key (it signs the pings)
// and at least one other member; without them the primary fences at its
// lease deadline as before.
//
// Acknowledgements are authenticated per member: every agent holds an
// Ed25519 key (kept beside the agent socket, see signer) whose
// public half it registers in Raft (Member.failsafe_key); each ping
// carries a random nonce, and the acknowledgement is the member's
// signature over the cluster, member, primary, epoch and that nonce
// (ackMessage). The primary counts it only when it verifies under
// the key the last granted renewal listed for that member, so neither a
// bare HTTP 200 from whoever answers at the address, nor a replayed
// answer, nor a host holding only the (shared) gossip key can acknowledge
// for a member.
//
// The timing argument. Let T be the lease TTL the primary's pings carry
// (the smaller of its lease_ttl and its last grant's) and M the larger of
// its safety margin and the grant's, W = T − M; every member refuses for
// at least T. For each member m let s_m be the instant (primary's monotonic
// clock) the primary SENT the latest ping m acknowledged, and a_m the
// instant m acknowledged it (m's monotonic clock); causality gives
// s_m <= a_m in real time. The primary serves past its lease deadline only
// until D = min over m of (s_m + W), and only while every m has
// acknowledged a ping sent after the last granted renewal; it fences at D
// (as it fences at the lease deadline, with the same fast shutdown).
//   - No member can be promoted while the primary serves: m refuses every
//     promotion order until a_m + T on its clock. The primary stops writes
//     by D + f <= s_m + W + f (f the fencing time), and with clock rates off
//     by at most rho, s_m + W/(1−rho) + f < a_m + T/(1+rho) holds whenever
//     W/(1−rho) + f < T/(1+rho) — the lease's own condition (see the agent's Lease).
//     Acknowledging and starting a promotion exclude each other (one
//     mutex; an agent being promoted acknowledges nothing, a promoted one
//     is writable and acknowledges nothing), so no ack can slip in after a
//     promotion's check. Promotion needs the member's agent to carry out a
//     Promote order, so the refusal alone bounds it; the coordinators, in
//     addition, hold back while a fresh report shows an acknowledgement.
//   - A primary that cannot reach every member fences before any
//     promotion: if member m did not acknowledge a ping sent after the last
//     renewal, D is at most the lease deadline, which precedes the leader's
//     expiry of the lease (Lease's argument) — and the coordinators promote
//     nobody before that expiry. If m acknowledged such a ping but no newer
//     one, D <= s_m + W, before m's refusal window a_m + T ends (above); a
//     member that never acknowledged can only be promoted after the lease
//     expiry, and a member that did only after its own refusal window, both
//     after D.
//   - A renewal granted again (the leader reachable) ends failsafe mode;
//     the leader renews a lease it saw expire only while no failover of the
//     epoch began (it revokes the lease atomically with checking expiry
//     before it orders any promotion), so a granted renewal never overlaps
//     a promotion.
//   - An agent restart must not forget an acknowledgement: it is also kept
//     (wall-clock time, no fsync: a host reboot takes longer than T) next to
//     the agent socket and honoured for the rest of its T after a restart.
//
// # What it owns
//
// The primary's side (Failsafe.Run and pingMembers: the members to ask,
// the keys recorded in Raft, the acknowledgements by send time, the
// failsafe deadline and the fence at it), the member's side
// (Failsafe.ServeHTTP: acknowledging, keeping the acknowledgement beside
// the agent socket, refusing promotion for its window through
// Failsafe.BeginPromote), this agent's acknowledgement key, and the pure
// serve-or-fence decision (decide, with its table test).
//
// # What it must never do
//
// Never let a primary serve past its lease deadline unless every member
// the coordinators could promote acknowledged a ping sent after the last
// granted renewal, and never past the earliest of those acknowledgements'
// windows; never acknowledge while this node is writable, being promoted,
// or named as the primary; never let a promotion start within an
// acknowledgement's refusal window (also across an agent restart); never
// count an answer not signed over the ping's nonce with the key recorded
// in Raft. It reads the lease and fences through the narrow Lease and
// Deps it is given, and imports no other agent package.
package failsafe
