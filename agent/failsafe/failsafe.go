package failsafe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgdr/pgdr/pkg/gossip"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ttlFactor bounds a ping's lease_ttl_ms at this many times the member's
// own lease_ttl (Failsafe.maxTTL): a larger one is refused as malformed
// rather than blocking promotions for long. It leaves room for a rolling
// change of lease_ttl (TestFailsafeMismatchedTTL).
const ttlFactor = 4

// Config is what the failsafe takes from the agent's configuration, with
// the defaults already applied.
type Config struct {
	Cluster string // cluster
	Node    string // node.name
	// Enabled: failover.failsafe (default on) and a gossip key.
	Enabled bool
	// KeyFile is gossip.key_file: the pings are signed and checked with it.
	KeyFile string
	// Socket is agent.socket: the signing key and the latest
	// acknowledgement are kept beside it ("": in memory only).
	Socket string
	// LeaseTTL, SafetyMargin and Loop are failover.lease_ttl,
	// failover.safety_margin and failover.loop.
	LeaseTTL, SafetyMargin, Loop time.Duration
}

// Lease is the primary lease as the failsafe reads it. The agent's lease
// implements it; both methods take the lease's own lock and return only
// standard types, so the lease's package need not import this one.
// Without a lease (an agent with no coordinators) Serving says serve and
// Status reports nothing granted.
type Lease interface {
	// Serving is the lease's own verdict at now: whether PostgreSQL may
	// serve writes on the lease alone, and why not.
	Serving(now time.Time) (bool, string)
	// Status reads at once whether a renewal was granted since the node
	// became primary, why the node is fenced ("" when it is not), and the
	// lease's deadline.
	Status() (granted bool, fenced string, deadline time.Time)
}

// Peers is the gossip pool as the failsafe reads it: every member heard
// of, dead ones included.
type Peers interface {
	Members() []gossip.Peer
}

// Deps is what the failsafe needs from the rest of the agent.
type Deps struct {
	// Lease is the primary lease; nil: none (no coordinators).
	Lease Lease
	// Fence stops PostgreSQL and writes the marker (at the failsafe
	// deadline; the error is logged by the fencer).
	Fence func(ctx context.Context, reason string) error
	// Epoch is the highest epoch this agent has seen.
	Epoch func() uint64
	// Report is the latest health report (nil before the first).
	Report func() *pgdrv1.HealthReport
	Log    *slog.Logger
}

// Failsafe is the agent's failsafe: on a primary, the pings that carry it
// past its lease while the coordinator leader is unreachable (Run); on a
// member, the acknowledgements and the promotion refusal they imply
// (ServeHTTP, BeginPromote).
type Failsafe struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	maxTTL time.Duration // the longest lease TTL a ping may make this member honour

	primary primary // the primary's side: grants, members, acknowledgements
	member  member  // the member's side: its acknowledgement, the promotion hold
	signer  signer  // this agent's acknowledgement key
}

// primary is the primary's side of the failsafe, guarded by mu.
type primary struct {
	mu       sync.Mutex
	peers    Peers
	known    map[string]string // member → API URL, from gossip
	recorded map[string]string // member → API URL, from the last granted renewal (Raft)
	keys     map[string][]byte // member → Ed25519 public key, from the last granted renewal (Raft)
	tracker  tracker
	// grantTTL and grantMargin: the last granted renewal's ttl and safety
	// margin (0: none seen), which the failsafe window honours as the
	// lease's window does.
	grantTTL, grantMargin time.Duration
	active                bool // last verdict (for logging transitions)
	lastWhy               string
}

// New builds the failsafe; Run pings the members while it is primary.
func New(cfg Config, deps Deps) *Failsafe {
	f := &Failsafe{cfg: cfg, deps: deps, log: deps.Log, maxTTL: ttlFactor * cfg.LeaseTTL}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Socket != "" {
		f.signer.path = cfg.Socket + ".failsafe-key"
		f.member.path = cfg.Socket + ".failsafe-ack"
	}
	return f
}

// SetPeers gives the failsafe the gossip pool once it is up.
func (f *Failsafe) SetPeers(p Peers) {
	f.primary.mu.Lock()
	f.primary.peers = p
	f.primary.mu.Unlock()
}

// members returns every other member of this cluster: recorded in Raft
// (the last grant) or heard of through gossip.
func (p *primary) members(cluster, self string) (names []string, api map[string]string) {
	p.mu.Lock()
	peers := p.peers
	p.mu.Unlock()
	var heard []gossip.Peer
	if peers != nil {
		heard = peers.Members()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known == nil {
		p.known = map[string]string{}
	}
	for _, m := range heard {
		if m.Meta.Kind != gossip.KindAgent || m.Meta.Cluster != cluster || m.Meta.Name == self || m.Meta.Name == "" {
			continue
		}
		if m.Meta.API != "" || p.known[m.Meta.Name] == "" {
			p.known[m.Meta.Name] = m.Meta.API
		}
	}
	return mergeMembers(p.known, p.recorded)
}

// mergeMembers unites the gossip-known and Raft-recorded members; the API
// recorded in Raft wins, a gossip-advertised one is used only for a member
// Raft has none for (whoever gossips an address cannot redirect the pings
// of a recorded member).
func mergeMembers(gossiped, recorded map[string]string) (names []string, api map[string]string) {
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

// ttl is the lease TTL the failsafe window derives from and the window
// itself, like the lease's: the smaller TTL and the larger margin of the
// agent's configuration (leaseTTL, margin) and the last grant. The TTL
// travels in the pings, so that every member refuses promotion for at
// least as long as this window plus the margin.
func (p *primary) ttl(leaseTTL, margin time.Duration) (ttl, window time.Duration) {
	p.mu.Lock()
	gt, gm := p.grantTTL, p.grantMargin
	p.mu.Unlock()
	ttl = leaseTTL
	if gt > 0 {
		ttl = min(ttl, gt)
	}
	if gm > 0 {
		margin = max(margin, gm)
	}
	return ttl, max(ttl-margin, 0)
}

// verdict evaluates decide on the failsafe's and the lease's state.
func (f *Failsafe) verdict(now time.Time) verdict {
	if f.deps.Lease == nil {
		return verdict{Serve: true}
	}
	granted, fenced, deadline := f.deps.Lease.Status()
	in := input{
		Now: now, Enabled: f.cfg.Enabled, Granted: granted, Fenced: fenced != "",
		LeaseDeadline: deadline, Loop: f.cfg.Loop,
	}
	_, in.Window = f.primary.ttl(f.cfg.LeaseTTL, f.cfg.SafetyMargin)
	in.Members, _ = f.primary.members(f.cfg.Cluster, f.cfg.Node)
	f.primary.mu.Lock()
	tr := f.primary.tracker
	tr.acks = maps.Clone(f.primary.tracker.acks)
	f.primary.mu.Unlock()
	in.Tracker = &tr
	return decide(in)
}

// Gauges reports the members whose acknowledgements this node needs, how
// many of them have no key from the coordinators, and whether failsafe
// carries the primary now (for /metrics).
func (f *Failsafe) Gauges() (members, unverifiable int, active bool) {
	names, _ := f.primary.members(f.cfg.Cluster, f.cfg.Node)
	f.primary.mu.Lock()
	for _, n := range names {
		if len(f.primary.keys[n]) == 0 {
			unverifiable++
		}
	}
	active = f.primary.active
	f.primary.mu.Unlock()
	return len(names), unverifiable, active
}

// Deadline is the effective fencing deadline given the lease's.
func (f *Failsafe) Deadline(leaseDeadline time.Time) time.Time {
	v := f.verdict(time.Now())
	if v.Deadline.After(leaseDeadline) {
		return v.Deadline
	}
	return leaseDeadline
}

// Serving is /primary's lease condition with failsafe: the lease's
// verdict, extended while every member acknowledges.
func (f *Failsafe) Serving(now time.Time) (bool, string) {
	if f.deps.Lease == nil {
		return true, ""
	}
	ok, why := f.deps.Lease.Serving(now)
	if ok {
		return true, ""
	}
	if v := f.verdict(now); v.Serve {
		return true, ""
	} else if v.Reason != "" && v.Reason != "fenced" && why != "" && !strings.HasPrefix(why, "fenced") {
		why += "; failsafe: " + v.Reason
	}
	return false, why
}

// ExpiredReason explains a fence at a failsafe deadline ("" when failsafe
// was not serving).
func (f *Failsafe) ExpiredReason() string {
	f.primary.mu.Lock()
	defer f.primary.mu.Unlock()
	if !f.primary.active {
		return ""
	}
	return "the primary lease could not be renewed and the failsafe acknowledgements ran out: " + f.primary.lastWhy
}

// Granted records a granted renewal sent at sent: the members and keys it
// lists (recorded in Raft) replace the ones before, and failsafe mode ends.
func (f *Failsafe) Granted(sent time.Time, resp *pgdrv1.RenewLeaseResponse) {
	p := &f.primary
	p.mu.Lock()
	defer p.mu.Unlock()
	p.grantTTL = time.Duration(resp.GetTtlMs()) * time.Millisecond
	p.grantMargin = time.Duration(resp.GetSafetyMarginMs()) * time.Millisecond
	rec := make(map[string]string, len(resp.GetMembers()))
	keys := make(map[string][]byte, len(resp.GetMembers()))
	for _, m := range resp.GetMembers() {
		if m.GetName() != "" && m.GetName() != f.cfg.Node {
			rec[m.GetName()] = m.GetApiUrl()
			keys[m.GetName()] = m.GetFailsafeKey()
		}
	}
	p.recorded, p.keys = rec, keys
	if p.active {
		f.log.Info("the primary lease was renewed again; failsafe mode ends", "component", "failsafe")
		p.active = false
	}
	p.tracker.granted(sent)
}

// Refused records a refusal from a reachable leader: no failsafe until the
// next grant.
func (f *Failsafe) Refused() {
	f.primary.mu.Lock()
	f.primary.tracker.refusedByLeader()
	f.primary.mu.Unlock()
}

// Reset forgets the primary's bookkeeping (the node is no longer primary).
func (f *Failsafe) Reset() {
	f.primary.mu.Lock()
	f.primary.tracker.reset()
	f.primary.active = false
	f.primary.mu.Unlock()
}

// Run pings the members every failover.loop while a renewal is overdue,
// and fences at the failsafe deadline (a timer, not the next tick: the
// deadline already carries only the safety margin), until ctx ends.
func (f *Failsafe) Run(ctx context.Context) {
	log := f.log.With("component", "failsafe")
	loop := f.cfg.Loop
	t := time.NewTicker(loop)
	defer t.Stop()
	client := &http.Client{}
	pingDone := make(chan struct{}, 1)
	pinging := false
	var lastMiss string
	// Rounds of pings are at least a quarter loop apart: a member that
	// answers at once without acknowledging must not make this a busy loop.
	var nextRound time.Time
	p := &f.primary
	for {
		now := time.Now()
		v := f.verdict(now)
		p.mu.Lock()
		was := p.active
		p.active = v.Active
		if v.Active {
			p.lastWhy = fmt.Sprintf("every member acknowledged a ping; %s limits the deadline", v.Limiting)
		} else if was {
			p.active = true // kept for the fence reason below
			p.lastWhy = v.Reason
			if p.lastWhy == "" {
				p.lastWhy = fmt.Sprintf("%s's last acknowledged ping is older than lease_ttl - safety_margin", v.Limiting)
			}
		}
		p.mu.Unlock()
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
				fenced := ""
				if f.deps.Lease != nil {
					_, fenced, _ = f.deps.Lease.Status()
				}
				if fenced == "" {
					f.deps.Fence(ctx, f.ExpiredReason())
				}
			}
			p.mu.Lock()
			p.active = false
			p.mu.Unlock()
		}
		if v.Ping && !pinging && !now.Before(nextRound) {
			pinging = true
			nextRound = now.Add(loop / 4)
			go func() {
				f.pingMembers(ctx, client, log, pingTimeout(time.Now(), v.Deadline, loop))
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

// pingMembers sends one signed ping to every member at once and records
// the acknowledgements by the ping's send time.
func (f *Failsafe) pingMembers(ctx context.Context, client *http.Client, log *slog.Logger, timeout time.Duration) {
	key, err := gossip.LoadKey(f.cfg.KeyFile)
	if err != nil {
		log.Debug("failsafe: no key", "err", err)
		return
	}
	names, api := f.primary.members(f.cfg.Cluster, f.cfg.Node)
	ttl, _ := f.primary.ttl(f.cfg.LeaseTTL, f.cfg.SafetyMargin)
	f.primary.mu.Lock()
	keys := f.primary.keys
	f.primary.mu.Unlock()
	sent := time.Now()
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	ping := Ping{Cluster: f.cfg.Cluster, Primary: f.cfg.Node, Epoch: f.deps.Epoch(), SentAt: sent.UTC(),
		LeaseTTLMs: ttl.Milliseconds(), Nonce: hex.EncodeToString(nonce)}
	body, _ := json.Marshal(ping)
	sig := Sign(key, body)
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
			req, err := http.NewRequestWithContext(pctx, http.MethodPost, strings.TrimRight(api[n], "/")+Path, bytes.NewReader(body))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(SignatureHeader, sig)
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
			if err := verifyAck(keys[n], n, ping, msg); err != nil {
				log.Warn("failsafe: an answer does not count as an acknowledgement", "member", n, "api", api[n], "err", err)
				return
			}
			f.primary.mu.Lock()
			f.primary.tracker.acked(n, sent)
			f.primary.mu.Unlock()
		}()
	}
	wg.Wait()
}
