package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestLeaseDeadline: the deadline starts at start + ttl - margin, moves to
// send time + ttl - margin with each grant (never to the answer's time,
// never backwards), uses the grant's shorter TTL and larger margin, and
// a primary without any grant must stop serving at once and fence at the
// first deadline.
func TestLeaseDeadline(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	l := NewLease(t0, 5*time.Second, time.Second)
	if !l.Deadline().Equal(at(4000)) || l.Expired(at(3999)) || !l.Expired(at(4000)) {
		t.Fatalf("initial deadline %v", l.Deadline().Sub(t0))
	}
	if ok, why := l.Serving(at(1)); ok || why == "" {
		t.Fatalf("serving without a grant: %v %q", ok, why)
	}
	grant := &pgdrv1.RenewLeaseResponse{Granted: true, Epoch: 3, Primary: "a"}
	// Sent at 1000, answered late: still counts from 1000.
	if fence, _ := l.Answer("a", 3, at(1000), grant); fence {
		t.Fatal("a grant fenced")
	}
	if !l.Deadline().Equal(at(5000)) {
		t.Fatalf("deadline after a grant sent at 1s: %v", l.Deadline().Sub(t0))
	}
	if ok, _ := l.Serving(at(4999)); !ok {
		t.Fatal("not serving inside the lease")
	}
	if ok, _ := l.Serving(at(5000)); ok {
		t.Fatal("serving at the deadline")
	}
	// An older grant (answers out of order) does not move it back.
	l.Answer("a", 3, at(500), grant)
	if !l.Deadline().Equal(at(5000)) {
		t.Fatalf("deadline moved back: %v", l.Deadline().Sub(t0))
	}
	// The grant's shorter TTL and larger margin win: 3s - 1.5s.
	l.Answer("a", 3, at(4000), &pgdrv1.RenewLeaseResponse{Granted: true, TtlMs: 3000, SafetyMarginMs: 1500})
	if !l.Deadline().Equal(at(5500)) {
		t.Fatalf("deadline with the grant's 3s/1.5s: %v", l.Deadline().Sub(t0))
	}
	// Longer values in the grant do not lengthen the agent's lease.
	l.Answer("a", 3, at(5000), &pgdrv1.RenewLeaseResponse{Granted: true, TtlMs: 60000, SafetyMarginMs: 1})
	if !l.Deadline().Equal(at(9000)) {
		t.Fatalf("deadline with a generous grant: %v", l.Deadline().Sub(t0))
	}
	// A replica resets: a later promotion gets a fresh window and needs a grant.
	l.Reset(at(20000))
	if l.Granted() || !l.Deadline().Equal(at(24000)) {
		t.Fatalf("after reset: granted %v deadline %v", l.Granted(), l.Deadline().Sub(t0))
	}
	l.Fence("lease lost")
	if ok, why := l.Serving(at(20001)); ok || why != "fenced: lease lost" {
		t.Fatalf("serving while fenced: %v %q", ok, why)
	}
	l.Answer("a", 3, at(20001), grant)
	if ok, _ := l.Serving(at(20002)); ok {
		t.Fatal("a grant unfenced the node")
	}
	l.Unfence(at(30000))
	if l.Fenced() != "" || l.Granted() || !l.Deadline().Equal(at(34000)) {
		t.Fatalf("after unfence: %q %v %v", l.Fenced(), l.Granted(), l.Deadline().Sub(t0))
	}
}

// TestLeaseRefusals: which refusals fence at once.
func TestLeaseRefusals(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for i, c := range []struct {
		resp  *pgdrv1.RenewLeaseResponse
		fence bool
	}{
		{&pgdrv1.RenewLeaseResponse{Reason: "no primary recorded for cluster main yet", Epoch: 9}, false},
		{&pgdrv1.RenewLeaseResponse{Reason: "lease held by pg-a2 at epoch 4", Primary: "pg-a2", Epoch: 4}, true},
		{&pgdrv1.RenewLeaseResponse{Reason: "lease held by pg-a2 at epoch 3", Primary: "pg-a2", Epoch: 3}, true},
		{&pgdrv1.RenewLeaseResponse{Reason: "epoch moved on", Epoch: 4}, true},
		{&pgdrv1.RenewLeaseResponse{Reason: "request carries epoch 3, current is 4", Primary: "pg-a1", Epoch: 4}, false},
		{&pgdrv1.RenewLeaseResponse{Reason: "busy", Epoch: 3}, false},
	} {
		l := NewLease(t0, 5*time.Second, time.Second)
		fence, why := l.Answer("pg-a1", 3, t0.Add(time.Second), c.resp)
		if fence != c.fence || (fence && why == "") {
			t.Errorf("case %d (%v): fence %v %q, want %v", i, c.resp, fence, why, c.fence)
		}
		if l.Granted() || !l.Deadline().Equal(t0.Add(4*time.Second)) {
			t.Errorf("case %d: a refusal extended the lease to %v", i, l.Deadline().Sub(t0))
		}
	}
}

// TestLeaseClassify: what the loop makes of a report.
func TestLeaseClassify(t *testing.T) {
	primary := &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true}
	replica := &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, InRecovery: true}
	stopped := &pgdrv1.HealthReport{}
	hung := &pgdrv1.HealthReport{PostmasterAlive: true}
	// partial: SELECT 1 answered, the identity query timed out (issue 12 #5).
	partial := &pgdrv1.HealthReport{PostmasterAlive: true, Connectable: true, RecoveryUnknown: true,
		Error: "server identity: timeout: context deadline exceeded"}
	for i, c := range []struct {
		r              *pgdrv1.HealthReport
		fenced, signal bool
		want           leaseRole
	}{
		{nil, false, false, roleWait},
		{primary, false, false, roleMaybe},
		{replica, false, false, roleNotPrimary},
		{stopped, false, false, roleNotPrimary},
		{hung, false, false, roleMaybe},
		{hung, false, true, roleNotPrimary},
		{stopped, true, false, roleFenced},
		{primary, true, false, roleFencedLive},
		{nil, true, false, roleFenced},
		// A replica's partial report: standby.signal decides, nothing
		// renews, nothing fences.
		{partial, false, true, roleNotPrimary},
		// Partial, no standby.signal: renewed, but a refusal fences nothing.
		{partial, false, false, roleUnsure},
		// Partial and fenced: not "fenced yet writable", no second fence.
		{partial, true, true, roleFenced},
		{partial, true, false, roleFenced},
		// A complete report wins over a stray standby.signal either way.
		{replica, false, true, roleNotPrimary},
		{primary, false, true, roleMaybe},
	} {
		if got := classify(c.r, c.fenced, c.signal); got != c.want {
			t.Errorf("case %d (report %v, fenced %v, standby.signal %v): got %v, want %v", i, c.r, c.fenced, c.signal, got, c.want)
		}
	}
}

// TestPrimaryFollowsLease: with coordinators configured /primary answers
// 200 only while a lease is granted and not expired; without them it
// answers from the report alone.
func TestPrimaryFollowsLease(t *testing.T) {
	report := func() *pgdrv1.HealthReport {
		return &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true}
	}
	standalone := New(testConfig(t, ""), nil, slog.New(slog.DiscardHandler))
	standalone.latest = report()
	if code, body := get(t, standalone.Handler(), "GET", "/primary"); code != 200 {
		t.Fatalf("standalone /primary: %d %s", code, body)
	}
	d := New(testConfig(t, "coordinator: {addresses: ['127.0.0.1:1'], ca_file: /ca, token_file: /tok}\nfailover: {loop: 100ms, lease_ttl: 2s, safety_margin: 500ms}\n"), nil, slog.New(slog.DiscardHandler))
	d.latest = report()
	h := d.Handler()
	if code, body := get(t, h, "GET", "/primary"); code != 503 || !strings.Contains(body, "no primary lease granted") {
		t.Fatalf("/primary before any grant: %d %s", code, body)
	}
	d.leaseMu.Lock()
	d.lease.Answer("pg-a2", 1, time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true})
	d.leaseMu.Unlock()
	if code, body := get(t, h, "GET", "/primary"); code != 200 {
		t.Fatalf("/primary with a lease: %d %s", code, body)
	}
	d.leaseMu.Lock()
	d.lease.Reset(time.Now().Add(-time.Hour))
	d.lease.Answer("pg-a2", 1, time.Now().Add(-2*time.Second), &pgdrv1.RenewLeaseResponse{Granted: true})
	d.leaseMu.Unlock()
	if code, body := get(t, h, "GET", "/primary"); code != 503 || !strings.Contains(body, "expired") {
		t.Fatalf("/primary after the deadline: %d %s", code, body)
	}
	if code, _ := get(t, h, "GET", "/health"); code != 200 {
		t.Fatalf("/health follows the report, not the lease: %d", code)
	}
}

// TestLeaseRoundPartialReport: one lease round against a leader that names
// another primary. A partial report (SELECT 1 answered, the recovery state
// could not be read) with standby.signal present sends no renewal and
// fences nothing; without standby.signal it renews, and the refusal fences
// nothing either. A complete writable report is fenced on the same refusal.
func TestLeaseRoundPartialReport(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	if err := ca.Issue(dir, "coord", tlsutil.RoleCoordinator, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	stc, err := tlsutil.ServerConfig(tlsutil.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "coord.crt"), Key: filepath.Join(dir, "coord.key")}, false)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeCluster{coords: map[string]*fakeCoord{}, leader: "c1"}
	c := &fakeCoord{fc: fc, name: "c1", addr: ln.Addr().String(), srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(stc))),
		renewal: &pgdrv1.RenewLeaseResponse{Primary: "pg-a1", Epoch: 4, Reason: "the recorded primary of cluster main is pg-a1 at epoch 4"}}
	fc.coords["c1"] = c
	pgdrv1.RegisterAgentServiceServer(c.srv, c)
	go c.srv.Serve(ln)
	t.Cleanup(c.srv.Stop)
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("agent-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	coord := fmt.Sprintf("coordinator: {addresses: [%q], ca_file: %s, token_file: %s}\nfailover: {loop: 100ms, lease_ttl: 5s, safety_margin: 1s}\n",
		c.addr, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token"))

	partial := &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true, RecoveryUnknown: true,
		Error: "server identity: timeout: context deadline exceeded"}
	writable := &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true}
	for _, tc := range []struct {
		what         string
		r            *pgdrv1.HealthReport
		signal       bool
		wantRenewals int
		wantFenced   bool
	}{
		{"partial report with standby.signal", partial, true, 0, false},
		{"partial report without standby.signal", partial, false, 1, false},
		{"complete writable report", writable, false, 1, true},
	} {
		t.Run(tc.what, func(t *testing.T) {
			d := New(testConfig(t, coord), nil, slog.New(slog.DiscardHandler))
			d.latest = tc.r
			if tc.signal {
				if err := os.WriteFile(filepath.Join(d.cfg.Postgres.PGData, "standby.signal"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c.mu.Lock()
			c.renewals = 0
			c.mu.Unlock()
			var warned []string
			lc := &leaseConn{d: d}
			defer lc.close()
			d.leaseRound(context.Background(), lc, func(err error) { warned = append(warned, err.Error()) })
			c.mu.Lock()
			renewals := c.renewals
			c.mu.Unlock()
			d.leaseMu.Lock()
			fenced := d.lease.Fenced()
			d.leaseMu.Unlock()
			_, markerErr := os.Stat(filepath.Join(d.cfg.Postgres.PGData, "pgdr.fenced"))
			t.Logf("renewals %d, fenced %q, warnings %q", renewals, fenced, warned)
			if renewals != tc.wantRenewals {
				t.Errorf("%d renewals sent, want %d", renewals, tc.wantRenewals)
			}
			if (fenced != "") != tc.wantFenced || (markerErr == nil) != tc.wantFenced {
				t.Errorf("fenced %q (marker written: %v), want fenced %v", fenced, markerErr == nil, tc.wantFenced)
			}
		})
	}
}
