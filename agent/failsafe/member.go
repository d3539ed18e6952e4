package failsafe

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/gossip"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// ack is a member's latest acknowledgement.
type ack struct {
	at      time.Time // monotonic when recorded in this process
	primary string
	epoch   uint64
	ttl     time.Duration // the ping's lease TTL (0: not sent)
}

// persistedAck is an acknowledgement as kept beside the agent socket.
type persistedAck struct {
	At      time.Time `json:"at"`
	Primary string    `json:"primary"`
	Epoch   uint64    `json:"epoch"`
	TTLMs   int64     `json:"lease_ttl_ms,omitempty"`
}

// member is the member's side: its latest acknowledgement (kept across
// restarts) and the promotion that holds acknowledgements back. One mutex,
// so that acknowledging and starting a promotion exclude each other.
type member struct {
	path string // where the acknowledgement is kept ("" : in memory only)

	mu        sync.Mutex
	ack       ack  // this node's latest acknowledgement
	loaded    bool // the persisted acknowledgement was read
	promoting bool
}

// loadLocked reads the persisted acknowledgement once (mu held): honoured
// for the rest of the larger of ttl (this agent's lease TTL) and its own,
// bounded by maxTTL.
func (m *member) loadLocked(ttl, maxTTL time.Duration) {
	if m.loaded {
		return
	}
	m.loaded = true
	if m.path == "" {
		return
	}
	b, err := os.ReadFile(m.path)
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
	pttl := min(time.Duration(pa.TTLMs)*time.Millisecond, maxTTL)
	if age < max(ttl, pttl) && m.ack.at.IsZero() {
		m.ack = ack{at: time.Now().Add(-age), primary: pa.Primary, epoch: pa.Epoch, ttl: pttl}
	}
}

// persist keeps acknowledgement a for a restarted agent (wall-clock time,
// no fsync: a host reboot takes longer than T).
func (m *member) persist(a ack) {
	if m.path == "" {
		return
	}
	b, _ := json.Marshal(persistedAck{At: a.at.Round(0), Primary: a.primary, Epoch: a.epoch, TTLMs: a.ttl.Milliseconds()})
	tmp := m.path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, m.path)
	}
}

// refusal says why this agent refuses promotion at now ("" = it does
// not): for the larger of its own lease TTL and the acknowledged ping's,
// so that a primary with a longer TTL than this member's (a rolling
// configuration change) has stopped serving before then.
func refusal(a ack, now time.Time, ttl time.Duration) string {
	if a.at.IsZero() {
		return ""
	}
	if age := now.Sub(a.at); age < max(ttl, a.ttl) {
		return fmt.Sprintf("refuses promotion: acknowledged %s's failsafe ping %s ago", a.primary, age.Round(time.Millisecond))
	}
	return ""
}

// ackDecision says whether a verified ping of the right cluster is
// acknowledged (""), or why not.
func ackDecision(self string, p Ping, knownEpoch uint64, r *pgdrv1.HealthReport, promoting bool) string {
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

// BeginPromote refuses a promotion while an acknowledgement is within
// lease_ttl; otherwise it blocks acknowledgements until done.
func (f *Failsafe) BeginPromote() (done func(), err error) {
	m := &f.member
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loadLocked(f.cfg.LeaseTTL, f.maxTTL)
	if why := refusal(m.ack, time.Now(), f.cfg.LeaseTTL); why != "" {
		return nil, errors.New(why)
	}
	m.promoting = true
	return func() {
		m.mu.Lock()
		m.promoting = false
		m.mu.Unlock()
	}, nil
}

// Promoting reports whether a promotion holds acknowledgements back
// (BeginPromote's done not called yet).
func (f *Failsafe) Promoting() bool {
	f.member.mu.Lock()
	defer f.member.mu.Unlock()
	return f.member.promoting
}

// ServeHTTP answers POST /failsafe (Path): a member's acknowledgement of a
// primary's ping.
func (f *Failsafe) ServeHTTP(w http.ResponseWriter, req *http.Request) {
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
	key, err := gossip.LoadKey(f.cfg.KeyFile)
	if f.cfg.KeyFile == "" || err != nil || !Verify(key, body, req.Header.Get(SignatureHeader)) {
		http.Error(w, "unauthenticated failsafe ping", http.StatusUnauthorized)
		return
	}
	var p Ping
	if err := json.Unmarshal(body, &p); err != nil || p.Primary == "" || p.Epoch == 0 || p.LeaseTTLMs < 0 || p.LeaseTTLMs > f.maxTTL.Milliseconds() {
		http.Error(w, "bad failsafe ping", http.StatusBadRequest)
		return
	}
	if p.Cluster != f.cfg.Cluster {
		http.Error(w, fmt.Sprintf("wrong cluster %q (this is %q)", p.Cluster, f.cfg.Cluster), http.StatusBadRequest)
		return
	}
	if skew := time.Since(p.SentAt); skew > maxSkew || skew < -maxSkew {
		http.Error(w, fmt.Sprintf("sent_at %s is too far from this clock", p.SentAt.Format(time.RFC3339Nano)), http.StatusBadRequest)
		return
	}
	if !f.cfg.Enabled {
		http.Error(w, "failsafe is disabled on this agent", http.StatusConflict)
		return
	}
	m := &f.member
	m.mu.Lock()
	m.loadLocked(f.cfg.LeaseTTL, f.maxTTL)
	why := ackDecision(f.cfg.Node, p, f.deps.Epoch(), f.deps.Report(), m.promoting)
	var a ack
	if why == "" {
		a = ack{at: time.Now(), primary: p.Primary, epoch: p.Epoch, ttl: time.Duration(p.LeaseTTLMs) * time.Millisecond}
		m.ack = a
	}
	m.mu.Unlock()
	if why != "" {
		http.Error(w, "not acknowledged: "+why, http.StatusConflict)
		return
	}
	m.persist(a)
	signer, err := f.signer.get()
	if err != nil {
		// Unsigned, the answer would not count; say why instead.
		http.Error(w, "acknowledged, but cannot sign: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer{Acknowledged: true, Node: f.cfg.Node, Primary: p.Primary, Epoch: p.Epoch,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(signer, ackMessage(f.cfg.Node, p)))})
}

// Annotate puts the failsafe fields into a fresh report.
func (f *Failsafe) Annotate(r *pgdrv1.HealthReport) {
	if r == nil {
		return
	}
	m := &f.member
	m.mu.Lock()
	m.loadLocked(f.cfg.LeaseTTL, f.maxTTL)
	a := m.ack
	m.mu.Unlock()
	if !a.at.IsZero() {
		r.FailsafeAckedAt = timestamppb.New(a.at)
		r.FailsafePrimary = a.primary
		r.FailsafeEpoch = a.epoch
		r.FailsafeRefuseMs = max(f.cfg.LeaseTTL, a.ttl).Milliseconds()
	}
	r.FailsafeActive = f.verdict(time.Now()).Active
}

// PublicKey is the public half of the failsafe key, registered in Raft;
// nil (acknowledgements will not count) when it cannot be had.
func (f *Failsafe) PublicKey() []byte {
	k, err := f.signer.get()
	if err != nil {
		f.log.Warn("failsafe: no signing key; this member's acknowledgements will not count", "err", err)
		return nil
	}
	return []byte(k.Public().(ed25519.PublicKey))
}
