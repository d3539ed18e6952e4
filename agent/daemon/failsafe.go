package daemon

// Failsafe: a coordinator outage must not take writes down, and must never
// make two primaries (Patroni's failsafe lesson).
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
// Ed25519 key (kept beside the agent socket, see failsafeSigner) whose
// public half it registers in Raft (Member.failsafe_key); each ping
// carries a random nonce, and the acknowledgement is the member's
// signature over the cluster, member, primary, epoch and that nonce
// (failsafeAckMessage). The primary counts it only when it verifies under
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
//     W/(1−rho) + f < T/(1+rho) — the lease's own condition (see Lease).
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

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/gossip"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// FailsafePath is the agent's failsafe endpoint; FailsafeSignatureHeader
// carries "sha256=" + hex(HMAC-SHA256(gossip key, body)).
const (
	FailsafePath            = "/failsafe"
	FailsafeSignatureHeader = "X-Pgdr-Signature"
	// failsafeMaxSkew bounds how far sent_at may be from the receiver's
	// wall clock (a replayed ping is refused once it is older).
	failsafeMaxSkew = time.Minute
)

// FailsafePing is the body of a failsafe ping.
type FailsafePing struct {
	Cluster string    `json:"cluster"`
	Primary string    `json:"primary"`
	Epoch   uint64    `json:"epoch"`
	SentAt  time.Time `json:"sent_at"`
	// LeaseTTLMs is the lease TTL the primary's failsafe window derives
	// from (its own, or the last grant's when smaller): the member refuses
	// promotion for the larger of it and its own TTL (0: an agent that
	// does not send it; the member's own TTL then).
	LeaseTTLMs int64 `json:"lease_ttl_ms,omitempty"`
	// Nonce: random, fresh for each ping; the acknowledgement signs it.
	Nonce string `json:"nonce,omitempty"`
}

// failsafeAnswer is the body of an acknowledgement (200).
type failsafeAnswer struct {
	Acknowledged bool   `json:"acknowledged"`
	Node         string `json:"node"`
	Primary      string `json:"primary"`
	Epoch        uint64 `json:"epoch"`
	// Signature: Ed25519 by the member's failsafe key over
	// failsafeAckMessage, base64.
	Signature string `json:"signature"`
}

// failsafeAckMessage is what a member signs to acknowledge ping p.
func failsafeAckMessage(node string, p FailsafePing) []byte {
	return fmt.Appendf(nil, "pgdr failsafe ack v1\ncluster=%s\nnode=%s\nprimary=%s\nepoch=%d\nnonce=%s\n",
		p.Cluster, node, p.Primary, p.Epoch, p.Nonce)
}

// verifyFailsafeAck reports whether body (a member's 200 answer) is node's
// acknowledgement of ping p, signed with key (its registered public key).
func verifyFailsafeAck(key []byte, node string, p FailsafePing, body []byte) error {
	if len(key) != ed25519.PublicKeySize {
		return fmt.Errorf("no failsafe key of %s is recorded in Raft", node)
	}
	var a failsafeAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("answer of %s: %w", node, err)
	}
	sig, err := base64.StdEncoding.DecodeString(a.Signature)
	if err != nil || !a.Acknowledged || !ed25519.Verify(ed25519.PublicKey(key), failsafeAckMessage(node, p), sig) {
		return fmt.Errorf("answer of %s is not signed by its registered failsafe key over this ping's nonce", node)
	}
	return nil
}

// failsafeTTLFactor bounds a ping's lease_ttl_ms at this many times the
// member's own lease_ttl (failsafeMaxTTL): a larger one is refused as
// malformed rather than blocking promotions for long. It leaves room for a
// rolling change of lease_ttl (TestFailsafeMismatchedTTL).
const failsafeTTLFactor = 4

// failsafeMaxTTL is the longest lease TTL a ping may make this member
// honour.
func (d *Daemon) failsafeMaxTTL() time.Duration { return failsafeTTLFactor * d.leaseTTL() }

// SignFailsafe returns the signature header value of body under key.
func SignFailsafe(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifyFailsafe checks sig (SignFailsafe's form) in constant time.
func VerifyFailsafe(key, body []byte, sig string) bool {
	h, ok := strings.CutPrefix(strings.TrimSpace(sig), "sha256=")
	if !ok || len(key) == 0 {
		return false
	}
	got, err := hex.DecodeString(h)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// failsafeAck is a member's latest acknowledgement.
type failsafeAck struct {
	at      time.Time // monotonic when recorded in this process
	primary string
	epoch   uint64
	ttl     time.Duration // the ping's lease TTL (0: not sent)
}

// failsafeTracker is the primary's bookkeeping, a pure state machine (the
// caller passes the time).
type failsafeTracker struct {
	lastGrantSent time.Time            // send time of the last granted renewal
	refused       bool                 // a reachable leader refused since then
	acks          map[string]time.Time // member → send time of its last acked ping
}

// granted records a granted renewal sent at sent: failsafe mode ends.
func (t *failsafeTracker) granted(sent time.Time) {
	if sent.After(t.lastGrantSent) {
		t.lastGrantSent = sent
	}
	t.refused = false
}

// refusedByLeader records a refusal from a reachable leader: no failsafe
// until the next grant.
func (t *failsafeTracker) refusedByLeader() { t.refused = true }

func (t *failsafeTracker) acked(member string, sent time.Time) {
	if t.acks == nil {
		t.acks = map[string]time.Time{}
	}
	if sent.After(t.acks[member]) {
		t.acks[member] = sent
	}
}

func (t *failsafeTracker) reset() { *t = failsafeTracker{} }

// failsafeInput is the serve-or-fence decision's view.
type failsafeInput struct {
	Now           time.Time
	Enabled       bool
	Granted       bool      // the lease was granted since the node became primary
	Fenced        bool      // already fenced
	LeaseDeadline time.Time // from the grants (Lease.Deadline)
	Window        time.Duration
	Loop          time.Duration
	Members       []string // every other member whose acknowledgement is needed
	Tracker       *failsafeTracker
}

// failsafeVerdict is the decision.
type failsafeVerdict struct {
	Deadline time.Time // fence at or after this instant
	Serve    bool      // may serve writes now
	Active   bool      // serving only because of failsafe acknowledgements
	Ping     bool      // ping the members now
	PingAt   time.Time // when pings become due (zero: failsafe does not apply)
	Missing  []string  // members without an acknowledgement after the last grant
	Limiting string    // the member whose acknowledgement sets the deadline
	Reason   string    // why failsafe does not extend the lease ("" when it does)
}

// decideFailsafe is the serve-or-fence decision, a pure function.
func decideFailsafe(in failsafeInput) failsafeVerdict {
	v := failsafeVerdict{Deadline: in.LeaseDeadline}
	t := in.Tracker
	if t == nil {
		t = &failsafeTracker{}
	}
	switch {
	case in.Fenced:
		v.Reason = "fenced"
	case !in.Enabled:
		v.Reason = "failsafe disabled (failover.failsafe: false)"
	case !in.Granted || t.lastGrantSent.IsZero():
		v.Reason = "no lease granted yet"
	case t.refused:
		v.Reason = "the coordinator leader refused the lease"
	case len(in.Members) == 0:
		v.Reason = "no other member known (Raft or gossip)"
	}
	if v.Reason == "" {
		// Ping once a renewal is overdue (the last one did not come back
		// granted within one and a half loops). The loop wakes at PingAt
		// rather than at its next tick: the acknowledgements must be in
		// before the lease deadline, and a loaded member answers slowly.
		v.PingAt = t.lastGrantSent.Add(in.Loop + in.Loop/2)
		v.Ping = !in.Now.Before(v.PingAt)
		var fs time.Time
		for _, m := range in.Members {
			s, ok := t.acks[m]
			if !ok || !s.After(t.lastGrantSent) {
				v.Missing = append(v.Missing, m)
				continue
			}
			if d := s.Add(in.Window); fs.IsZero() || d.Before(fs) {
				fs, v.Limiting = d, m
			}
		}
		switch {
		case len(v.Missing) > 0:
			v.Reason = "no failsafe acknowledgement from " + strings.Join(v.Missing, ", ") + " after the last renewal"
		case fs.After(v.Deadline):
			v.Deadline = fs
		}
	}
	v.Serve = !in.Fenced && in.Granted && in.Now.Before(v.Deadline)
	v.Active = v.Serve && !in.Now.Before(in.LeaseDeadline)
	return v
}

// failsafeState is the daemon's failsafe state (its zero value is ready).
type failsafeState struct {
	mu        sync.Mutex
	pool      *gossip.Pool
	known     map[string]string  // member → API URL, from gossip
	recorded  map[string]string  // member → API URL, from the last granted renewal (Raft)
	keys      map[string][]byte  // member → Ed25519 public key, from the last granted renewal (Raft)
	signer    ed25519.PrivateKey // this agent's failsafe key (failsafeSigner)
	tracker   failsafeTracker
	ack       failsafeAck // this node's latest acknowledgement
	loaded    bool        // the persisted acknowledgement was read
	promoting bool
	// grantTTL and grantMargin: the last granted renewal's ttl and safety
	// margin (0: none seen), which the failsafe window honours as the
	// lease's window does.
	grantTTL, grantMargin time.Duration
	active                bool // last verdict (for logging transitions)
	lastWhy               string
}

func (d *Daemon) failsafeEnabled() bool {
	f := d.cfg.Failover.Failsafe
	return (f == nil || *f) && d.cfg.Gossip.KeyFile != ""
}

// apiURL is where other agents and the coordinators reach this agent's
// HTTP server: health.advertise, else health.listen.
func (d *Daemon) apiURL() string {
	a := d.cfg.Health.Advertise
	if a == "" {
		a = d.cfg.Health.Listen
	}
	if a == "" {
		return ""
	}
	return "http://" + a
}

// leaderDialAddress is where to dial the leader: coordinator.leader_addresses
// overrides its advertised address.
func (d *Daemon) leaderDialAddress(resp *pgdrv1.LeaderResponse) string {
	if a := d.cfg.Coordinator.LeaderAddresses[resp.GetName()]; a != "" {
		return a
	}
	return resp.GetApiAddress()
}

func (d *Daemon) setGossipPool(p *gossip.Pool) {
	d.fs.mu.Lock()
	d.fs.pool = p
	d.fs.mu.Unlock()
}

// failsafeMembers returns every other member of this cluster: recorded in
// Raft (the last grant) or heard of through gossip.
func (d *Daemon) failsafeMembers() (names []string, api map[string]string) {
	d.fs.mu.Lock()
	pool := d.fs.pool
	d.fs.mu.Unlock()
	var peers []gossip.Peer
	if pool != nil {
		peers = pool.Members()
	}
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if d.fs.known == nil {
		d.fs.known = map[string]string{}
	}
	for _, p := range peers {
		if p.Meta.Kind != gossip.KindAgent || p.Meta.Cluster != d.cfg.Cluster || p.Meta.Name == d.cfg.Node.Name || p.Meta.Name == "" {
			continue
		}
		if p.Meta.API != "" || d.fs.known[p.Meta.Name] == "" {
			d.fs.known[p.Meta.Name] = p.Meta.API
		}
	}
	return mergeFailsafeMembers(d.fs.known, d.fs.recorded)
}

// mergeFailsafeMembers unites the gossip-known and Raft-recorded members;
// the API recorded in Raft wins, a gossip-advertised one is used only for
// a member Raft has none for (whoever gossips an address cannot redirect
// the pings of a recorded member).
func mergeFailsafeMembers(gossiped, recorded map[string]string) (names []string, api map[string]string) {
	api = map[string]string{}
	for n, a := range recorded {
		api[n] = a
	}
	for n, a := range gossiped {
		if api[n] == "" {
			api[n] = a
		}
	}
	for n := range api {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, api
}

// failsafeVerdict evaluates decideFailsafe on the daemon's state.
func (d *Daemon) failsafeVerdict(now time.Time) failsafeVerdict {
	d.leaseMu.Lock()
	if d.lease == nil {
		d.leaseMu.Unlock()
		return failsafeVerdict{Serve: true}
	}
	in := failsafeInput{
		Now: now, Enabled: d.failsafeEnabled(), Granted: d.lease.Granted(), Fenced: d.lease.Fenced() != "",
		LeaseDeadline: d.lease.Deadline(), Loop: d.loopInterval(),
	}
	d.leaseMu.Unlock()
	_, in.Window = d.failsafeTTL()
	in.Members, _ = d.failsafeMembers()
	d.fs.mu.Lock()
	tr := d.fs.tracker
	tr.acks = maps(d.fs.tracker.acks)
	d.fs.mu.Unlock()
	in.Tracker = &tr
	return decideFailsafe(in)
}

// failsafeGauges reports the members whose acknowledgements this node
// needs, how many of them have no key from the coordinators, and whether
// failsafe carries the primary now (for /metrics).
func (d *Daemon) failsafeGauges() (members, unverifiable int, active bool) {
	names, _ := d.failsafeMembers()
	d.fs.mu.Lock()
	for _, n := range names {
		if len(d.fs.keys[n]) == 0 {
			unverifiable++
		}
	}
	active = d.fs.active
	d.fs.mu.Unlock()
	return len(names), unverifiable, active
}

// failsafeTTL is the lease TTL the failsafe window derives from and the
// window itself, like the lease's (Lease.window): the smaller TTL and the
// larger margin of the agent's configuration and the last grant. The TTL
// travels in the pings, so that every member refuses promotion for at
// least as long as this window plus the margin.
func (d *Daemon) failsafeTTL() (ttl, window time.Duration) {
	d.fs.mu.Lock()
	gt, gm := d.fs.grantTTL, d.fs.grantMargin
	d.fs.mu.Unlock()
	ttl, margin := d.leaseTTL(), d.safetyMargin()
	if gt > 0 {
		ttl = min(ttl, gt)
	}
	if gm > 0 {
		margin = max(margin, gm)
	}
	return ttl, max(ttl-margin, 0)
}

func maps(m map[string]time.Time) map[string]time.Time {
	out := make(map[string]time.Time, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// failsafeDeadline is the effective fencing deadline given the lease's.
func (d *Daemon) failsafeDeadline(leaseDeadline time.Time) time.Time {
	v := d.failsafeVerdict(time.Now())
	if v.Deadline.After(leaseDeadline) {
		return v.Deadline
	}
	return leaseDeadline
}

// failsafeServing is /primary's lease condition with failsafe.
func (d *Daemon) failsafeServing(now time.Time) (bool, string) {
	d.leaseMu.Lock()
	if d.lease == nil {
		d.leaseMu.Unlock()
		return true, ""
	}
	ok, why := d.lease.Serving(now)
	d.leaseMu.Unlock()
	if ok {
		return true, ""
	}
	if v := d.failsafeVerdict(now); v.Serve {
		return true, ""
	} else if v.Reason != "" && v.Reason != "fenced" && why != "" && !strings.HasPrefix(why, "fenced") {
		why += "; failsafe: " + v.Reason
	}
	return false, why
}

// failsafeExpiredReason explains a fence at a failsafe deadline ("" when
// failsafe was not serving).
func (d *Daemon) failsafeExpiredReason() string {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if !d.fs.active {
		return ""
	}
	return "the primary lease could not be renewed and the failsafe acknowledgements ran out: " + d.fs.lastWhy
}

func (d *Daemon) failsafeGranted(sent time.Time, resp *pgdrv1.RenewLeaseResponse) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	d.fs.grantTTL = time.Duration(resp.GetTtlMs()) * time.Millisecond
	d.fs.grantMargin = time.Duration(resp.GetSafetyMarginMs()) * time.Millisecond
	rec := make(map[string]string, len(resp.GetMembers()))
	keys := make(map[string][]byte, len(resp.GetMembers()))
	for _, m := range resp.GetMembers() {
		if m.GetName() != "" && m.GetName() != d.cfg.Node.Name {
			rec[m.GetName()] = m.GetApiUrl()
			keys[m.GetName()] = m.GetFailsafeKey()
		}
	}
	d.fs.recorded, d.fs.keys = rec, keys
	if d.fs.active {
		d.log.Info("the primary lease was renewed again; failsafe mode ends", "component", "failsafe")
		d.fs.active = false
	}
	d.fs.tracker.granted(sent)
}

func (d *Daemon) failsafeRefused() {
	d.fs.mu.Lock()
	d.fs.tracker.refusedByLeader()
	d.fs.mu.Unlock()
}

func (d *Daemon) failsafeReset() {
	d.fs.mu.Lock()
	d.fs.tracker.reset()
	d.fs.active = false
	d.fs.mu.Unlock()
}

// failsafeLoop pings the members every failover.loop while a renewal is
// overdue, and fences at the failsafe deadline (a timer, not the next
// tick: the deadline already carries only the safety margin).
func (d *Daemon) failsafeLoop(ctx context.Context) {
	log := d.log.With("component", "failsafe")
	t := time.NewTicker(d.loopInterval())
	defer t.Stop()
	client := &http.Client{}
	pingDone := make(chan struct{}, 1)
	pinging := false
	var lastMiss string
	// Rounds of pings are at least a quarter loop apart: a member that
	// answers at once without acknowledging must not make this a busy loop.
	var nextRound time.Time
	for {
		now := time.Now()
		v := d.failsafeVerdict(now)
		d.fs.mu.Lock()
		was := d.fs.active
		d.fs.active = v.Active
		if v.Active {
			d.fs.lastWhy = fmt.Sprintf("every member acknowledged a ping; %s limits the deadline", v.Limiting)
		} else if was {
			d.fs.active = true // kept for the fence reason below
			d.fs.lastWhy = v.Reason
			if d.fs.lastWhy == "" {
				d.fs.lastWhy = fmt.Sprintf("%s's last acknowledged ping is older than lease_ttl - safety_margin", v.Limiting)
			}
		}
		d.fs.mu.Unlock()
		if v.Active && !was {
			log.Warn("FAILSAFE: the coordinator leader is unreachable; serving on every member's failsafe acknowledgement", "deadline_in", v.Deadline.Sub(now).Round(time.Millisecond))
		}
		if v.Ping && len(v.Missing) > 0 {
			if s := strings.Join(v.Missing, ","); s != lastMiss {
				log.Warn("failsafe: members did not acknowledge; the primary fences at its deadline", "missing", v.Missing, "deadline_in", v.Deadline.Sub(now).Round(time.Millisecond))
				lastMiss = s
			}
		} else if !v.Ping {
			lastMiss = ""
		}
		if was && !v.Active {
			if !v.Serve && ctx.Err() == nil {
				d.leaseMu.Lock()
				fenced := d.lease.Fenced() != ""
				d.leaseMu.Unlock()
				if !fenced {
					d.fence(ctx, d.failsafeExpiredReason())
				}
			}
			d.fs.mu.Lock()
			d.fs.active = false
			d.fs.mu.Unlock()
		}
		if v.Ping && !pinging && !now.Before(nextRound) {
			pinging = true
			nextRound = now.Add(d.loopInterval() / 4)
			go func() {
				d.pingMembers(ctx, client, log, pingTimeout(time.Now(), v.Deadline, d.loopInterval()))
				pingDone <- struct{}{}
			}()
		}
		// Wake at the earliest of: the serving deadline (fence on time),
		// pings falling due, the next round allowed.
		var wake time.Time
		earliest := func(at time.Time) {
			if !at.IsZero() && (wake.IsZero() || at.Before(wake)) {
				wake = at
			}
		}
		if v.Active {
			earliest(v.Deadline)
		}
		if !v.Ping {
			earliest(v.PingAt)
		} else if !pinging {
			earliest(nextRound)
		}
		var timer <-chan time.Time
		var tm *time.Timer
		if !wake.IsZero() {
			tm = time.NewTimer(max(time.Until(wake), 0))
			timer = tm.C
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-timer:
		case <-pingDone:
			pinging = false
		}
		if tm != nil {
			tm.Stop()
		}
		if ctx.Err() != nil {
			if pinging {
				<-pingDone
			}
			return
		}
	}
}

// pingTimeout bounds one round of pings sent at now: at least a loop (and
// 200 ms), and up to the serving deadline (at most three loops), since an
// acknowledgement counts by the ping's send time and a slow answer that
// arrives before the deadline still extends it.
func pingTimeout(now, deadline time.Time, loop time.Duration) time.Duration {
	return max(loop, 200*time.Millisecond, min(deadline.Sub(now), 3*loop))
}

// pingMembers sends one signed ping to every member at once and records
// the acknowledgements by the ping's send time.
func (d *Daemon) pingMembers(ctx context.Context, client *http.Client, log *slog.Logger, timeout time.Duration) {
	key, err := gossip.LoadKey(d.cfg.Gossip.KeyFile)
	if err != nil {
		log.Debug("failsafe: no key", "err", err)
		return
	}
	names, api := d.failsafeMembers()
	ttl, _ := d.failsafeTTL()
	d.fs.mu.Lock()
	keys := d.fs.keys
	d.fs.mu.Unlock()
	sent := time.Now()
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	ping := FailsafePing{Cluster: d.cfg.Cluster, Primary: d.cfg.Node.Name, Epoch: d.epoch.Current(), SentAt: sent.UTC(),
		LeaseTTLMs: ttl.Milliseconds(), Nonce: hex.EncodeToString(nonce)}
	body, _ := json.Marshal(ping)
	sig := SignFailsafe(key, body)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range names {
		if api[n] == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(pctx, http.MethodPost, strings.TrimRight(api[n], "/")+FailsafePath, bytes.NewReader(body))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(FailsafeSignatureHeader, sig)
			resp, err := client.Do(req)
			if err != nil {
				log.Debug("failsafe ping", "member", n, "err", err)
				return
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				log.Debug("failsafe ping refused", "member", n, "status", resp.StatusCode, "body", strings.TrimSpace(string(msg)))
				return
			}
			if err := verifyFailsafeAck(keys[n], n, ping, msg); err != nil {
				log.Warn("failsafe: an answer does not count as an acknowledgement", "member", n, "api", api[n], "err", err)
				return
			}
			d.fs.mu.Lock()
			d.fs.tracker.acked(n, sent)
			d.fs.mu.Unlock()
		}()
	}
	wg.Wait()
}

// failsafeKeyPath keeps this agent's failsafe signing key (an Ed25519
// seed, hex, 0600) across restarts, beside the acknowledgement: a restart
// while the coordinators are unreachable must not change the key the
// primary knows from Raft.
func (d *Daemon) failsafeKeyPath() string {
	if d.cfg.Agent.Socket == "" {
		return ""
	}
	return d.cfg.Agent.Socket + ".failsafe-key"
}

// failsafeSigner returns this agent's failsafe key: read from
// failsafeKeyPath, or created there (or only in memory without a socket
// path) on first use.
func (d *Daemon) failsafeSigner() (ed25519.PrivateKey, error) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if d.fs.signer != nil {
		return d.fs.signer, nil
	}
	path := d.failsafeKeyPath()
	if path != "" {
		if b, err := os.ReadFile(path); err == nil {
			seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
			if err != nil || len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("failsafe key %s: not a hex Ed25519 seed; remove it to make a new one", path)
			}
			d.fs.signer = ed25519.NewKeyFromSeed(seed)
			return d.fs.signer, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("failsafe key: %w", err)
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("failsafe key: %w", err)
	}
	if path != "" {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(hex.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("failsafe key: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("failsafe key: %w", err)
		}
	}
	d.fs.signer = priv
	return priv, nil
}

// failsafePublicKey is the public half of the failsafe key, registered in
// Raft; nil (acknowledgements will not count) when it cannot be had.
func (d *Daemon) failsafePublicKey() []byte {
	k, err := d.failsafeSigner()
	if err != nil {
		d.log.Warn("failsafe: no signing key; this member's acknowledgements will not count", "err", err)
		return nil
	}
	return []byte(k.Public().(ed25519.PublicKey))
}

// ackPath keeps the latest acknowledgement across agent restarts.
func (d *Daemon) ackPath() string {
	if d.cfg.Agent.Socket == "" {
		return ""
	}
	return d.cfg.Agent.Socket + ".failsafe-ack"
}

type persistedAck struct {
	At      time.Time `json:"at"`
	Primary string    `json:"primary"`
	Epoch   uint64    `json:"epoch"`
	TTLMs   int64     `json:"lease_ttl_ms,omitempty"`
}

// loadAckLocked reads the persisted acknowledgement once (fs.mu held).
func (d *Daemon) loadAckLocked() {
	if d.fs.loaded {
		return
	}
	d.fs.loaded = true
	p := d.ackPath()
	if p == "" {
		return
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	var pa persistedAck
	if json.Unmarshal(b, &pa) != nil {
		return
	}
	age := time.Since(pa.At) // wall clock: the process restarted
	if age < 0 {
		age = 0
	}
	ttl := min(time.Duration(pa.TTLMs)*time.Millisecond, d.failsafeMaxTTL())
	if age < max(d.leaseTTL(), ttl) && d.fs.ack.at.IsZero() {
		d.fs.ack = failsafeAck{at: time.Now().Add(-age), primary: pa.Primary, epoch: pa.Epoch, ttl: ttl}
	}
}

// failsafeRefusal says why this agent refuses promotion at now ("" = it
// does not): for the larger of its own lease TTL and the acknowledged
// ping's, so that a primary with a longer TTL than this member's (a
// rolling configuration change) has stopped serving before then.
func failsafeRefusal(ack failsafeAck, now time.Time, ttl time.Duration) string {
	if ack.at.IsZero() {
		return ""
	}
	if age := now.Sub(ack.at); age < max(ttl, ack.ttl) {
		return fmt.Sprintf("refuses promotion: acknowledged %s's failsafe ping %s ago", ack.primary, age.Round(time.Millisecond))
	}
	return ""
}

// failsafeBeginPromote refuses a promotion while an acknowledgement is
// within lease_ttl; otherwise it blocks acknowledgements until done.
func (d *Daemon) failsafeBeginPromote() (done func(), err error) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	d.loadAckLocked()
	if why := failsafeRefusal(d.fs.ack, time.Now(), d.leaseTTL()); why != "" {
		return nil, errors.New(why)
	}
	d.fs.promoting = true
	return func() {
		d.fs.mu.Lock()
		d.fs.promoting = false
		d.fs.mu.Unlock()
	}, nil
}

// ackDecision says whether a verified ping of the right cluster is
// acknowledged (""), or why not.
func ackDecision(self string, p FailsafePing, knownEpoch uint64, r *pgdrv1.HealthReport, promoting bool) string {
	switch {
	case p.Primary == self:
		return "this node is the primary the ping names"
	case promoting:
		return "this node is being promoted"
	case p.Epoch < knownEpoch:
		return fmt.Sprintf("stale epoch %d: this agent knows epoch %d", p.Epoch, knownEpoch)
	case r == nil:
		return "no health report yet"
	case r.Connectable && !r.InRecovery && !r.Fenced:
		return "this node runs a writable primary"
	}
	return ""
}

// serveFailsafe answers POST /failsafe.
func (d *Daemon) serveFailsafe(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	key, err := gossip.LoadKey(d.cfg.Gossip.KeyFile)
	if d.cfg.Gossip.KeyFile == "" || err != nil || !VerifyFailsafe(key, body, req.Header.Get(FailsafeSignatureHeader)) {
		http.Error(w, "unauthenticated failsafe ping", http.StatusUnauthorized)
		return
	}
	var p FailsafePing
	if err := json.Unmarshal(body, &p); err != nil || p.Primary == "" || p.Epoch == 0 || p.LeaseTTLMs < 0 || p.LeaseTTLMs > d.failsafeMaxTTL().Milliseconds() {
		http.Error(w, "bad failsafe ping", http.StatusBadRequest)
		return
	}
	if p.Cluster != d.cfg.Cluster {
		http.Error(w, fmt.Sprintf("wrong cluster %q (this is %q)", p.Cluster, d.cfg.Cluster), http.StatusBadRequest)
		return
	}
	if skew := time.Since(p.SentAt); skew > failsafeMaxSkew || skew < -failsafeMaxSkew {
		http.Error(w, fmt.Sprintf("sent_at %s is too far from this clock", p.SentAt.Format(time.RFC3339Nano)), http.StatusBadRequest)
		return
	}
	if !d.failsafeEnabled() {
		http.Error(w, "failsafe is disabled on this agent", http.StatusConflict)
		return
	}
	d.fs.mu.Lock()
	d.loadAckLocked()
	why := ackDecision(d.cfg.Node.Name, p, d.epoch.Current(), d.Latest(), d.fs.promoting)
	var ack failsafeAck
	if why == "" {
		ack = failsafeAck{at: time.Now(), primary: p.Primary, epoch: p.Epoch, ttl: time.Duration(p.LeaseTTLMs) * time.Millisecond}
		d.fs.ack = ack
	}
	d.fs.mu.Unlock()
	if why != "" {
		http.Error(w, "not acknowledged: "+why, http.StatusConflict)
		return
	}
	if path := d.ackPath(); path != "" {
		b, _ := json.Marshal(persistedAck{At: ack.at.Round(0), Primary: ack.primary, Epoch: ack.epoch, TTLMs: ack.ttl.Milliseconds()})
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			os.Rename(tmp, path)
		}
	}
	signer, err := d.failsafeSigner()
	if err != nil {
		// Unsigned, the answer would not count; say why instead.
		http.Error(w, "acknowledged, but cannot sign: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(failsafeAnswer{Acknowledged: true, Node: d.cfg.Node.Name, Primary: p.Primary, Epoch: p.Epoch,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(signer, failsafeAckMessage(d.cfg.Node.Name, p)))})
}

// annotateFailsafe puts the failsafe fields into a fresh report.
func (d *Daemon) annotateFailsafe(r *pgdrv1.HealthReport) {
	if r == nil {
		return
	}
	d.fs.mu.Lock()
	d.loadAckLocked()
	ack := d.fs.ack
	d.fs.mu.Unlock()
	if !ack.at.IsZero() {
		r.FailsafeAckedAt = timestamppb.New(ack.at)
		r.FailsafePrimary = ack.primary
		r.FailsafeEpoch = ack.epoch
		r.FailsafeRefuseMs = max(d.leaseTTL(), ack.ttl).Milliseconds()
	}
	r.FailsafeActive = d.failsafeVerdict(time.Now()).Active
}
