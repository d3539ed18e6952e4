package daemon

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/failsafe"
	"github.com/pgdr/pgdr/agent/lease"
	"github.com/pgdr/pgdr/pkg/gossip"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The failsafe itself is tested in agent/failsafe; these tests cover what
// the daemon wires: the /failsafe route, the lease it reads, the report
// and epoch it answers from, and /metrics.

// failsafeDaemon is a replica's daemon with a gossip key and its own socket
// directory (where the acknowledgement is kept across restarts).
func failsafeDaemon(t *testing.T, dir string) (*Daemon, []byte) {
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
	cfg := testConfig(t, fmt.Sprintf("agent: {socket: %s}\ngossip: {key_file: %s}\nfailover: {lease_ttl: 5s, safety_margin: 1s}\n",
		filepath.Join(dir, "agent.sock"), keyFile))
	return New(cfg, nil, slog.New(slog.DiscardHandler)), key
}

// TestFailsafeWiring: a ping posted to the daemon's HTTP server reaches
// the failsafe, which answers from the daemon's latest report and epoch;
// the acknowledgement shows in the report and refuses the daemon's
// promotion; the lease (none here: no coordinators) never holds serving.
func TestFailsafeWiring(t *testing.T) {
	d, key := failsafeDaemon(t, t.TempDir())
	d.monitor.SetLatest(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true, InRecovery: true})
	d.epoch.See(3)
	post := func(p failsafe.Ping) (int, string) {
		body, _ := json.Marshal(p)
		req := httptest.NewRequest("POST", failsafe.Path, bytes.NewReader(body))
		req.Header.Set(failsafe.SignatureHeader, failsafe.Sign(key, body))
		rec := httptest.NewRecorder()
		d.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := post(failsafe.Ping{Cluster: "main", Primary: "pg-a1", Epoch: 2, SentAt: time.Now().UTC()}); code != 409 || !strings.Contains(body, "stale epoch 2: this agent knows epoch 3") {
		t.Fatalf("stale ping: %d %s", code, body)
	}
	if code, body := post(failsafe.Ping{Cluster: "main", Primary: "pg-a1", Epoch: 3, SentAt: time.Now().UTC()}); code != 200 || !strings.Contains(body, `"acknowledged":true`) {
		t.Fatalf("ping: %d %s", code, body)
	}
	r := &pgdrv1.HealthReport{Time: timestamppb.Now()}
	d.failsafe.Annotate(r)
	if r.FailsafePrimary != "pg-a1" || r.FailsafeEpoch != 3 || r.FailsafeRefuseMs != 5000 || r.FailsafeActive {
		t.Fatalf("report: %v", r)
	}
	if _, err := d.failsafe.BeginPromote(); err == nil || !strings.Contains(err.Error(), "refuses promotion: acknowledged pg-a1's failsafe ping") {
		t.Fatalf("promotion after an acknowledgement: %v", err)
	}
	if ok, why := d.failsafe.Serving(time.Now()); !ok {
		t.Fatalf("no lease (standalone): not serving: %s", why)
	}
}

// TestFailsafeLeaseDeadlines: the lease values the failsafe's decision
// table (agent/failsafe TestFailsafeDecision) starts from: granted at 0
// with T = 5s and M = 1s, the lease alone fences at 4s, and at 10s after
// a grant sent at 6s; a refusal naming another primary fences at once
// (the lease says so), whatever the acknowledgements. The failsafe reads
// them through the lease.Holder it is given.
func TestFailsafeLeaseDeadlines(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	granted := &pgdrv1.RenewLeaseResponse{Granted: true, TtlMs: 5000, SafetyMarginMs: 1000, Epoch: 3, Primary: "a"}
	l := lease.NewLease(t0, 5*time.Second, time.Second)
	l.Answer("a", 3, t0, granted)
	if !l.Granted() || !l.Deadline().Equal(at(4)) {
		t.Fatalf("granted at 0: granted %v deadline %v, want true at 4s", l.Granted(), l.Deadline().Sub(t0))
	}
	l.Answer("a", 3, at(6), granted)
	if !l.Deadline().Equal(at(10)) {
		t.Fatalf("granted again at 6s: deadline %v, want 10s", l.Deadline().Sub(t0))
	}

	l = lease.NewLease(t0, 5*time.Second, time.Second)
	l.Answer("a", 3, t0, granted)
	if fence, why := l.Answer("a", 3, at(5), &pgdrv1.RenewLeaseResponse{Epoch: 4, Primary: "b", Reason: "the recorded primary is b"}); !fence || !strings.Contains(why, "primary is b") {
		t.Fatalf("refusal naming another primary: fence %v %q", fence, why)
	}

	// The daemon's view of its lease, as the failsafe reads it.
	d, _ := failsafeDaemon(t, t.TempDir())
	if g, f, dl := d.lease.Status(); g || f != "" || !dl.IsZero() {
		t.Fatalf("no lease: status %v %q %v", g, f, dl)
	}
	d.lease.Set(lease.NewLease(t0, 5*time.Second, time.Second))
	d.lease.Update(func(l *lease.Lease) { l.Answer("a", 3, t0, granted) })
	if g, f, dl := d.lease.Status(); !g || f != "" || !dl.Equal(at(4)) {
		t.Fatalf("lease granted at 0: status %v %q %v", g, f, dl.Sub(t0))
	}
}

// TestFailsafeGauges: /metrics shows how many members' acknowledgements
// the primary needs and how many of them it cannot verify (no key from the
// coordinators yet): such a member keeps failsafe from carrying the primary.
func TestFailsafeGauges(t *testing.T) {
	d, _ := failsafeDaemon(t, t.TempDir())
	pub := make([]byte, ed25519.PublicKeySize)
	d.failsafe.Granted(time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Members: []*pgdrv1.FailsafeMember{
		{Name: "pg-a1", ApiUrl: "http://127.0.0.1:1", FailsafeKey: pub},
		{Name: "pg-b1", ApiUrl: "http://127.0.0.1:2"},
	}})
	rec := httptest.NewRecorder()
	d.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`pgdr_agent_failsafe_members{cluster="main",node="pg-a2"} 2`,
		`pgdr_agent_failsafe_unverifiable_members{cluster="main",node="pg-a2"} 1`,
		`pgdr_agent_failsafe_active{cluster="main",node="pg-a2"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
