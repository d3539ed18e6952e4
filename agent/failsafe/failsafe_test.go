package failsafe

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/gossip"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestFailsafeSignature(t *testing.T) {
	key, other := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
	body := []byte(`{"cluster":"main","primary":"pg-a1","epoch":3,"sent_at":"2026-01-01T00:00:00Z"}`)
	sig := Sign(key, body)
	if !strings.HasPrefix(sig, "sha256=") || !Verify(key, body, sig) {
		t.Fatalf("a good signature does not verify: %s", sig)
	}
	for name, c := range map[string]struct {
		key  []byte
		body []byte
		sig  string
	}{
		"another key":      {other, body, sig},
		"tampered body":    {key, bytes.Replace(body, []byte(`"epoch":3`), []byte(`"epoch":4`), 1), sig},
		"no prefix":        {key, body, strings.TrimPrefix(sig, "sha256=")},
		"empty signature":  {key, body, ""},
		"not hex":          {key, body, "sha256=zz"},
		"no key (no pool)": {nil, body, sig},
	} {
		if Verify(c.key, c.body, c.sig) {
			t.Errorf("%s: verified", name)
		}
	}
}

// agent is the rest of the agent as a failsafe sees it in these tests:
// the latest report and the highest epoch seen.
type agent struct {
	mu     sync.Mutex
	report *pgdrv1.HealthReport
	epoch  uint64
}

func (a *agent) setReport(r *pgdrv1.HealthReport) {
	a.mu.Lock()
	a.report = r
	a.mu.Unlock()
}

// seeEpoch is the daemon's: it raises the epoch seen and returns it.
func (a *agent) seeEpoch(e uint64) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.epoch = max(a.epoch, e)
	return a.epoch
}

func (a *agent) deps() Deps {
	return Deps{
		Epoch: func() uint64 { return a.seeEpoch(0) },
		Report: func() *pgdrv1.HealthReport {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.report
		},
		Fence: func(context.Context, string) error { return nil },
		Log:   slog.New(slog.DiscardHandler),
	}
}

// testConfig is the agent's failsafe configuration of pg-a2 in cluster
// main with a gossip key and its own socket directory (where the
// acknowledgement is kept across restarts): lease_ttl 5s, safety_margin
// 1s, loop 1s.
func testConfig(dir, keyFile string) Config {
	return Config{Cluster: "main", Node: "pg-a2", Enabled: true, KeyFile: keyFile, Socket: filepath.Join(dir, "agent.sock"),
		LeaseTTL: 5 * time.Second, SafetyMargin: time.Second, Loop: time.Second}
}

// failsafeAgent is a replica's failsafe with a gossip key and its own
// socket directory (where the acknowledgement is kept across restarts).
func failsafeAgent(t *testing.T, dir string) (*Failsafe, *agent, []byte) {
	t.Helper()
	k, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "gossip.key")
	if _, err := os.Stat(keyFile); err != nil {
		if err := os.WriteFile(keyFile, []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	key, err := gossip.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{}
	return New(testConfig(dir, keyFile), a.deps()), a, key
}

func postPing(t *testing.T, h http.Handler, key []byte, p Ping) (int, string) {
	t.Helper()
	body, _ := json.Marshal(p)
	req := httptest.NewRequest("POST", Path, bytes.NewReader(body))
	if key != nil {
		req.Header.Set(SignatureHeader, Sign(key, body))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestFailsafeAcknowledgement: who acknowledges which ping, what it
// records and reports, and that it then refuses promotion for lease_ttl
// (also after an agent restart).
func TestFailsafeAcknowledgement(t *testing.T) {
	dir := t.TempDir()
	f, a, key := failsafeAgent(t, dir)
	h := http.Handler(f)
	replica := &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, InRecovery: true}
	a.setReport(replica)
	a.seeEpoch(3)
	now := time.Now().UTC()
	ping := Ping{Cluster: "main", Primary: "pg-a1", Epoch: 3, SentAt: now}
	wrongKey := []byte("fedcba9876543210fedcba9876543210")

	for _, c := range []struct {
		n      int
		what   string
		key    []byte
		p      Ping
		report *pgdrv1.HealthReport
		code   int
		body   string
	}{
		{1, "unsigned", nil, ping, replica, 401, "unauthenticated"},
		{2, "signed with another key", wrongKey, ping, replica, 401, "unauthenticated"},
		{3, "another cluster", key, Ping{Cluster: "other", Primary: "pg-a1", Epoch: 3, SentAt: now}, replica, 400, "wrong cluster"},
		{4, "no epoch", key, Ping{Cluster: "main", Primary: "pg-a1", SentAt: now}, replica, 400, "bad failsafe ping"},
		{5, "replayed an hour later", key, Ping{Cluster: "main", Primary: "pg-a1", Epoch: 3, SentAt: now.Add(-time.Hour)}, replica, 400, "too far"},
		{6, "names this node as primary", key, Ping{Cluster: "main", Primary: "pg-a2", Epoch: 3, SentAt: now}, replica, 409, "is the primary"},
		{7, "stale epoch", key, Ping{Cluster: "main", Primary: "pg-a1", Epoch: 2, SentAt: now}, replica, 409, "stale epoch 2"},
		{8, "this node is writable", key, ping, &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true}, 409, "writable primary"},
		{9, "no report yet", key, ping, nil, 409, "no health report"},
	} {
		a.setReport(c.report)
		code, body := postPing(t, h, c.key, c.p)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("#%d %s: %d %q, want %d %q", c.n, c.what, code, body, c.code, c.body)
		}
	}
	if _, err := f.BeginPromote(); err != nil {
		t.Fatalf("no acknowledgement yet, but promotion refused: %v", err)
	}
	f.member.promoting = false

	// A stopped (or fenced) member acknowledges too: harmless.
	a.setReport(&pgdrv1.HealthReport{Time: timestamppb.Now()})
	if code, body := postPing(t, h, key, ping); code != 200 || !strings.Contains(body, `"acknowledged":true`) {
		t.Fatalf("stopped member: %d %s", code, body)
	}
	a.setReport(replica)
	if code, body := postPing(t, h, key, Ping{Cluster: "main", Primary: "pg-a1", Epoch: 4, SentAt: now}); code != 200 {
		t.Fatalf("replica, newer epoch: %d %s", code, body)
	}
	r := &pgdrv1.HealthReport{Time: timestamppb.Now()}
	f.Annotate(r)
	if r.FailsafePrimary != "pg-a1" || r.FailsafeEpoch != 4 || r.FailsafeAckedAt == nil || time.Since(r.FailsafeAckedAt.AsTime()) > 5*time.Second {
		t.Fatalf("report: %v", r)
	}
	_, err := f.BeginPromote()
	if err == nil || !strings.Contains(err.Error(), "refuses promotion: acknowledged pg-a1's failsafe ping") {
		t.Fatalf("promotion after an acknowledgement: %v", err)
	}

	// Restarted agent: the acknowledgement is still honoured.
	f2, _, _ := failsafeAgent(t, dir)
	if _, err := f2.BeginPromote(); err == nil || !strings.Contains(err.Error(), "refuses promotion") {
		t.Fatalf("after a restart: %v", err)
	}
	// lease_ttl after the acknowledgement the member may be promoted, and
	// while it is being promoted it acknowledges nothing.
	f.member.mu.Lock()
	f.member.ack.at = f.member.ack.at.Add(-5 * time.Second)
	f.member.mu.Unlock()
	done, err := f.BeginPromote()
	if err != nil {
		t.Fatalf("after lease_ttl: %v", err)
	}
	if code, body := postPing(t, h, key, ping); code != 409 || !strings.Contains(body, "being promoted") {
		t.Fatalf("ping during a promotion: %d %s", code, body)
	}
	done()
}

// TestFailsafeDecision: the serve-or-fence decision on a fake clock (T =
// 5s, M = 1s, loop 1s; the last grant was sent at 0, so the lease alone
// fences at 4s).
func TestFailsafeDecision(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// The lease granted at 0 with T 5s and M 1s: granted, its deadline at
	// 4s (after a grant at 6s, at 10s). TestFailsafeLeaseDeadlines in
	// agent/daemon checks that the agent's lease gives these.
	leaseDeadline := at(4)
	type ack struct {
		m    string
		sent float64
	}
	for _, c := range []struct {
		n        int
		what     string
		acks     []ack
		members  []string
		refused  bool
		disabled bool
		fenced   bool
		now      float64
		serve    bool
		active   bool
		ping     bool
		deadline float64
	}{
		{1, "renewals granted: serve on the lease, no pings", nil, []string{"b", "c"}, false, false, false, 1, true, false, false, 4},
		{2, "renewal overdue: ping", nil, []string{"b", "c"}, false, false, false, 1.5, true, false, true, 4},
		{3, "every member acknowledged: serve past the lease deadline", []ack{{"b", 2}, {"c", 3}}, []string{"b", "c"}, false, false, false, 5, true, true, true, 6},
		{4, "every member acknowledged: fence at the oldest ack + W", []ack{{"b", 2}, {"c", 3}}, []string{"b", "c"}, false, false, false, 6, false, false, true, 6},
		{5, "one member missing: fence at the lease deadline", []ack{{"b", 2}, {"b", 3}}, []string{"b", "c"}, false, false, false, 3.9, true, false, true, 4},
		{6, "one member missing: fenced at the deadline", []ack{{"b", 2}, {"b", 3}}, []string{"b", "c"}, false, false, false, 4, false, false, true, 4},
		{7, "an ack of a ping sent before the last renewal does not count", []ack{{"b", 2}, {"c", -0.5}}, []string{"b", "c"}, false, false, false, 4.5, false, false, true, 4},
		{8, "a reachable leader refused: no failsafe, the lease deadline", []ack{{"b", 2}, {"c", 3}}, []string{"b", "c"}, true, false, false, 5, false, false, false, 4},
		{9, "failsafe disabled", []ack{{"b", 2}, {"c", 3}}, []string{"b", "c"}, false, true, false, 5, false, false, false, 4},
		{10, "no other member known: no failsafe", nil, nil, false, false, false, 5, false, false, false, 4},
		{11, "fenced: never serves", []ack{{"b", 2}, {"c", 3}}, []string{"b", "c"}, false, false, true, 2, false, false, false, 4},
		{12, "members keep acknowledging: the deadline moves on", []ack{{"b", 2}, {"c", 3}, {"b", 9}, {"c", 9.1}}, []string{"b", "c"}, false, false, false, 12.9, true, true, true, 13},
		{13, "a new member appears in gossip without an ack: fence now", []ack{{"b", 9}, {"c", 9.1}}, []string{"b", "c", "d"}, false, false, false, 10, false, false, true, 4},
	} {
		var tr tracker
		tr.granted(t0)
		for _, a := range c.acks {
			tr.acked(a.m, at(a.sent))
		}
		if c.refused {
			tr.refusedByLeader()
		}
		v := decide(input{Now: at(c.now), Enabled: !c.disabled, Granted: true, Fenced: c.fenced,
			LeaseDeadline: leaseDeadline, Window: 4 * time.Second, Loop: time.Second, Members: c.members, Tracker: &tr})
		// Pings are due 1.5 loops after the last grant whenever failsafe
		// applies, and the loop wakes then.
		if wantPingAt := (c.n <= 7 || c.n >= 12) && !c.fenced; wantPingAt != !v.PingAt.IsZero() || (wantPingAt && !v.PingAt.Equal(at(1.5))) {
			t.Errorf("#%d %s: pings due at %v, want at 1.5 s: %v", c.n, c.what, v.PingAt.Sub(t0), wantPingAt)
		}
		if v.Serve != c.serve || v.Active != c.active || v.Ping != c.ping || !v.Deadline.Equal(at(c.deadline)) {
			t.Errorf("#%d %s: serve %v active %v ping %v deadline %v (%s); want %v %v %v %v",
				c.n, c.what, v.Serve, v.Active, v.Ping, v.Deadline.Sub(t0), v.Reason, c.serve, c.active, c.ping, c.deadline)
		}
	}

	// A refusal naming another primary fences at once, whatever the
	// acknowledgements: the lease says so (TestFailsafeLeaseDeadlines in
	// agent/daemon).

	// Renewal resumes: a grant ends failsafe mode; the old acks no longer
	// count, and no pings go out while renewals succeed.
	var tr tracker
	tr.granted(t0)
	tr.acked("b", at(5))
	tr.acked("c", at(5))
	in := input{Now: at(6), Enabled: true, Granted: true, LeaseDeadline: leaseDeadline, Window: 4 * time.Second, Loop: time.Second, Members: []string{"b", "c"}, Tracker: &tr}
	if v := decide(in); !v.Active || !v.Serve {
		t.Fatalf("before the renewal: %+v", v)
	}
	tr.granted(at(6)) // the lease granted again at 6s: its deadline at 10s
	in.LeaseDeadline, in.Now = at(10), at(6.5)
	if v := decide(in); v.Active || !v.Serve || v.Ping || !v.Deadline.Equal(at(10)) {
		t.Fatalf("after the renewal: %+v", v)
	}
}

// TestFailsafeTimingArgument checks the comment's inequality at the
// defaults: with every member acknowledging within W = T − M and refusing
// promotion for T after acknowledging, the primary stops at D + f, before
// any refusal window ends, for clock rates off by 500 ppm and f = 500ms.
func TestFailsafeTimingArgument(t *testing.T) {
	T, M, f, rho := 5.0, 1.0, 0.5, 500e-6
	W := T - M
	for _, lag := range []float64{0, 0.001, 0.5, 2} { // a_m − s_m: network and queueing delay
		s := 10.0
		stop := s + W/(1-rho) + f          // latest real time the primary still writes
		refuseUntil := s + lag + T/(1+rho) // earliest real time m's refusal ends
		if stop >= refuseUntil {
			t.Errorf("lag %.3fs: primary stops at %.4f, refusal ends at %.4f", lag, stop, refuseUntil)
		}
	}
}

// TestFailsafeMembersFromRaftAndGossip: the set a primary needs
// acknowledgements from includes a member recorded in Raft that never
// appeared in gossip, so the coordinators can never promote a member the
// primary did not ask.
func TestFailsafeMembersFromRaftAndGossip(t *testing.T) {
	names, api := mergeMembers(
		map[string]string{"pg-a2": "http://127.0.0.1:2", "pg-old": ""},
		map[string]string{"pg-a2": "http://10.0.0.2:1", "pg-b1": "http://127.0.0.1:3", "pg-old": "http://127.0.0.1:4", "pg-noapi": ""})
	if got := strings.Join(names, ","); got != "pg-a2,pg-b1,pg-noapi,pg-old" {
		t.Fatalf("members %s", got)
	}
	// The API recorded in Raft wins over a different gossip-advertised one.
	for n, want := range map[string]string{"pg-a2": "http://10.0.0.2:1", "pg-b1": "http://127.0.0.1:3", "pg-old": "http://127.0.0.1:4", "pg-noapi": ""} {
		if api[n] != want {
			t.Errorf("%s: api %q, want %q", n, api[n], want)
		}
	}

	f, _, _ := failsafeAgent(t, t.TempDir())
	f.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-b1", ApiUrl: "http://127.0.0.1:3"}, {Name: f.cfg.Node, ApiUrl: "http://self"}}})
	if names, _ := f.primary.members(f.cfg.Cluster, f.cfg.Node); strings.Join(names, ",") != "pg-b1" {
		t.Fatalf("after a grant listing pg-b1 (and this node): %v", names)
	}
	// A member known only from Raft, never acknowledging, keeps the
	// primary from serving past its lease deadline.
	now := time.Now()
	tr := &tracker{}
	tr.granted(now.Add(-3 * time.Second))
	tr.acked("pg-a2", now.Add(-500*time.Millisecond))
	in := input{Now: now, Enabled: true, Granted: true, LeaseDeadline: now.Add(-10 * time.Millisecond), Window: 4 * time.Second, Loop: time.Second, Tracker: tr}
	in.Members = []string{"pg-a2"}
	if v := decide(in); !v.Serve || !v.Active {
		t.Fatalf("gossip member acknowledged: want serving on failsafe, got %+v", v)
	}
	in.Members = []string{"pg-a2", "pg-b1"}
	if v := decide(in); v.Serve || len(v.Missing) != 1 || v.Missing[0] != "pg-b1" {
		t.Fatalf("Raft-only member pg-b1 never acknowledged: want no serving, missing pg-b1; got %+v", v)
	}
	// A grant that no longer lists pg-b1 (removed from Raft) drops it.
	f.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true})
	if names, _ := f.primary.members(f.cfg.Cluster, f.cfg.Node); len(names) != 0 {
		t.Fatalf("after a grant listing nobody: %v", names)
	}
}

// TestFailsafeMismatchedTTL: during a rolling change of failover.lease_ttl
// the primary (10s) and a member (5s) disagree. The member must refuse
// promotion for the ping's TTL, not only its own: otherwise the
// coordinators may promote it 5s after its acknowledgement while the
// primary, whose window is 10s − margin, still serves.
func TestFailsafeMismatchedTTL(t *testing.T) {
	f, a, key := failsafeAgent(t, t.TempDir()) // lease_ttl 5s
	a.setReport(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, InRecovery: true})
	a.seeEpoch(3)
	body := []byte(fmt.Sprintf(`{"cluster":"main","primary":"pg-a1","epoch":3,"sent_at":%q,"lease_ttl_ms":10000}`, time.Now().UTC().Format(time.RFC3339Nano)))
	req := httptest.NewRequest("POST", Path, bytes.NewReader(body))
	req.Header.Set(SignatureHeader, Sign(key, body))
	rec := httptest.NewRecorder()
	f.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("ping from a primary with lease_ttl 10s: %d %s", rec.Code, rec.Body.String())
	}
	// 6s after the acknowledgement: past the member's own 5s, within the
	// primary's 10s.
	f.member.mu.Lock()
	f.member.ack.at = f.member.ack.at.Add(-6 * time.Second)
	f.member.mu.Unlock()
	done, err := f.BeginPromote()
	if err == nil {
		done()
		t.Fatal("promotion allowed 6s after acknowledging a ping from a primary whose lease_ttl is 10s")
	}
	if !strings.Contains(err.Error(), "refuses promotion") {
		t.Fatalf("refusal: %v", err)
	}
	r := &pgdrv1.HealthReport{Time: timestamppb.Now()}
	f.Annotate(r)
	if r.FailsafeRefuseMs != 10000 {
		t.Fatalf("reported refusal window %dms, want the ping's 10000ms", r.FailsafeRefuseMs)
	}
	// A restarted agent keeps the longer window.
	f.member.mu.Lock()
	f.member.ack.at = f.member.ack.at.Add(6 * time.Second)
	f.member.mu.Unlock()
	b, _ := json.Marshal(persistedAck{At: time.Now().Add(-6 * time.Second), Primary: "pg-a1", Epoch: 3, TTLMs: 10000})
	if err := os.WriteFile(f.member.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f2 := New(f.cfg, a.deps())
	if _, err := f2.BeginPromote(); err == nil {
		t.Fatal("a restarted agent forgot the ping's longer TTL")
	}

	// The primary's side: lease_ttl 10s, but the leader grants 5s with a
	// 2s margin: the failsafe window is the lease's, 5s − 2s, and the
	// pings carry 5s (not the configured 10s).
	p, _, _ := failsafeAgent(t, t.TempDir())
	p.cfg.LeaseTTL = 10 * time.Second
	p.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, TtlMs: 5000, SafetyMarginMs: 2000})
	if ttl, w := p.primary.ttl(p.cfg.LeaseTTL, p.cfg.SafetyMargin); ttl != 5*time.Second || w != 3*time.Second {
		t.Fatalf("primary with lease_ttl 10s granted 5s/2s: ttl %s window %s, want 5s and 3s", ttl, w)
	}
}

// TestFailsafeAckAuthenticated: the primary counts an acknowledgement only
// when the member signed it, over the ping's nonce, with the key the
// member registered in Raft; a forged 200, a replayed genuine answer and
// an answer signed with another key do not count; and pings go to the
// API recorded in Raft, not to a different one advertised over gossip.
func TestFailsafeAckAuthenticated(t *testing.T) {
	dirP, dirM := t.TempDir(), t.TempDir()
	prim, pa, _ := failsafeAgent(t, dirP)
	prim.cfg.Node = "pg-a1"
	pa.seeEpoch(3)
	gk, err := os.ReadFile(filepath.Join(dirP, "gossip.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirM, "gossip.key"), gk, 0o600); err != nil {
		t.Fatal(err)
	}
	member, ma, _ := failsafeAgent(t, dirM) // pg-a2, sharing the gossip key
	ma.setReport(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, InRecovery: true})
	ma.seeEpoch(3)
	real := httptest.NewServer(member)
	defer real.Close()

	var forgedHits atomic.Int32
	var replay atomic.Value // a genuine answer to replay
	replay.Store(`{"acknowledged":true,"node":"pg-a2"}`)
	forged := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forgedHits.Add(1)
		io.WriteString(w, replay.Load().(string))
	}))
	defer forged.Close()

	log := slog.New(slog.DiscardHandler)
	ackedSince := func(t0 time.Time) bool {
		prim.primary.mu.Lock()
		defer prim.primary.mu.Unlock()
		return !prim.primary.tracker.acks["pg-a2"].Before(t0)
	}
	ping := func() time.Time {
		t0 := time.Now()
		prim.pingMembers(context.Background(), &http.Client{Timeout: 5 * time.Second}, log, time.Second)
		return t0
	}

	// A gossip-advertised API different from Raft's is not used.
	prim.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-a2", ApiUrl: real.URL}}})
	prim.primary.mu.Lock()
	prim.primary.known = map[string]string{"pg-a2": forged.URL}
	prim.primary.mu.Unlock()
	if _, api := prim.primary.members(prim.cfg.Cluster, prim.cfg.Node); api["pg-a2"] != real.URL {
		t.Errorf("pg-a2 reached at %q; want the API recorded in Raft %q, not gossip's", api["pg-a2"], real.URL)
	}
	ping()
	if n := forgedHits.Load(); n != 0 {
		t.Errorf("the gossip-advertised address was pinged %d times", n)
	}
	prim.primary.mu.Lock()
	prim.primary.known = nil
	prim.primary.mu.Unlock()

	// Any HTTP 200 from whoever answers at the recorded address: not an
	// acknowledgement.
	prim.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-a2", ApiUrl: forged.URL}}})
	if t0 := ping(); ackedSince(t0) {
		t.Errorf("a forged 200 without a valid signature counted as pg-a2's acknowledgement")
	}

	// The genuine member, with the key it registers: counted.
	memberKey := member.PublicKey()
	if len(memberKey) != ed25519.PublicKeySize {
		t.Fatalf("member key: %d bytes", len(memberKey))
	}
	var genuine atomic.Value
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequest(http.MethodPost, real.URL+r.URL.Path, r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		genuine.Store(string(b))
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	}))
	defer proxy.Close()
	prim.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-a2", ApiUrl: proxy.URL, FailsafeKey: memberKey}}})
	if t0 := ping(); !ackedSince(t0) {
		t.Fatalf("the genuine member's signed acknowledgement did not count")
	}
	// Its answer replayed to a later ping (another nonce): not counted.
	replay.Store(genuine.Load().(string))
	prim.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-a2", ApiUrl: forged.URL, FailsafeKey: memberKey}}})
	if t0 := ping(); ackedSince(t0) {
		t.Errorf("a replayed genuine acknowledgement counted for a new ping")
	}
	// Signed with a key other than the one recorded in Raft: not counted.
	other, _, _ := ed25519.GenerateKey(nil)
	prim.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-a2", ApiUrl: real.URL, FailsafeKey: other}}})
	if t0 := ping(); ackedSince(t0) {
		t.Errorf("an acknowledgement signed with a key other than the recorded one counted")
	}
	// No key recorded (an agent that registered none): not counted.
	prim.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{{Name: "pg-a2", ApiUrl: real.URL}}})
	if t0 := ping(); ackedSince(t0) {
		t.Errorf("an acknowledgement counted without a key recorded in Raft")
	}
	// The key survives an agent restart (it is kept beside the socket).
	again, _, _ := failsafeAgent(t, dirM)
	if !bytes.Equal(again.PublicKey(), memberKey) {
		t.Errorf("the failsafe key changed across a restart")
	}
}

// TestFailsafePingTTLBounded: a ping may make this member refuse promotion
// for at most ttlFactor times its own lease_ttl (5s here); a
// longer lease_ttl_ms (such as 10 minutes) is refused as malformed and
// acknowledges nothing, so it cannot hold promotions back for long.
func TestFailsafePingTTLBounded(t *testing.T) {
	f, a, key := failsafeAgent(t, t.TempDir()) // lease_ttl 5s
	a.setReport(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, InRecovery: true})
	a.seeEpoch(3)
	post := func(ttlMs int64) (int, string) {
		body := []byte(fmt.Sprintf(`{"cluster":"main","primary":"pg-a1","epoch":3,"sent_at":%q,"lease_ttl_ms":%d}`, time.Now().UTC().Format(time.RFC3339Nano), ttlMs))
		req := httptest.NewRequest("POST", Path, bytes.NewReader(body))
		req.Header.Set(SignatureHeader, Sign(key, body))
		rec := httptest.NewRecorder()
		f.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for _, ttl := range []int64{(10 * time.Minute).Milliseconds(), 20001} {
		if code, body := post(ttl); code != 400 || !strings.Contains(body, "bad failsafe ping") {
			t.Errorf("ping with lease_ttl_ms %d: %d %q, want 400 bad failsafe ping", ttl, code, body)
		}
	}
	if done, err := f.BeginPromote(); err != nil {
		t.Fatalf("refused pings acknowledged: promotion refused: %v", err)
	} else {
		done()
	}
	if code, body := post(20000); code != 200 {
		t.Fatalf("ping with lease_ttl_ms 20000 (4 x 5s): %d %q", code, body)
	}
	// A persisted acknowledgement with a longer TTL (written by an older
	// agent) is honoured for no longer than the bound either.
	b, _ := json.Marshal(persistedAck{At: time.Now().Add(-30 * time.Second), Primary: "pg-a1", Epoch: 3, TTLMs: (10 * time.Minute).Milliseconds()})
	if err := os.WriteFile(f.member.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f2 := New(f.cfg, a.deps())
	done, err := f2.BeginPromote()
	if err != nil {
		t.Fatalf("a persisted 10-minute acknowledgement 30s old still refuses promotion: %v", err)
	}
	done()
}

// TestPingTimeout: a round of pings may wait for slow answers up to the
// serving deadline (an acknowledgement counts by the ping's send time), at
// least a loop and at most three.
func TestPingTimeout(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		deadline, loop, want time.Duration
	}{
		{2500 * time.Millisecond, time.Second, 2500 * time.Millisecond},
		{300 * time.Millisecond, time.Second, time.Second},
		{-time.Second, time.Second, time.Second},
		{10 * time.Second, time.Second, 3 * time.Second},
		{time.Second, 50 * time.Millisecond, 200 * time.Millisecond},
	} {
		if got := pingTimeout(t0, t0.Add(c.deadline), c.loop); got != c.want {
			t.Errorf("deadline in %s, loop %s: %s, want %s", c.deadline, c.loop, got, c.want)
		}
	}
}
