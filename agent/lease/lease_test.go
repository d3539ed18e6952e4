package lease

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pgdr/pgdr/agent/epoch"
	"github.com/pgdr/pgdr/agent/failsafe"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The failsafe reads the lease through its Holder.
var _ failsafe.Lease = (*Holder)(nil)

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

// fakeLeader answers every renewal with renewal and counts them.
type fakeLeader struct {
	pgdrv1.UnimplementedAgentServiceServer
	mu       sync.Mutex
	renewal  *pgdrv1.RenewLeaseResponse
	renewals int
}

func (f *fakeLeader) RenewLease(ctx context.Context, req *pgdrv1.RenewLeaseRequest) (*pgdrv1.RenewLeaseResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals++
	return f.renewal, nil
}

// noFailsafe extends nothing.
type noFailsafe struct{}

func (noFailsafe) Deadline(d time.Time) time.Time                { return d }
func (noFailsafe) ExpiredReason() string                         { return "" }
func (noFailsafe) Granted(time.Time, *pgdrv1.RenewLeaseResponse) {}
func (noFailsafe) Refused()                                      {}
func (noFailsafe) Reset()                                        {}

// stoppedPG counts the fast shutdowns asked of it.
type stoppedPG struct{ stops int }

func (p *stoppedPG) Stop(context.Context) error { p.stops++; return nil }

// TestLeaseRoundPartialReport: one lease round against a leader that names
// another primary, reached through a connection of the loop's own (no
// session up). A partial report (SELECT 1 answered, the recovery state
// could not be read) with standby.signal present sends no renewal and
// fences nothing; without standby.signal it renews, and the refusal fences
// nothing either. A complete writable report is fenced on the same refusal.
func TestLeaseRoundPartialReport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leader := &fakeLeader{renewal: &pgdrv1.RenewLeaseResponse{Primary: "pg-a1", Epoch: 4, Reason: "the recorded primary of cluster main is pg-a1 at epoch 4"}}
	srv := grpc.NewServer()
	pgdrv1.RegisterAgentServiceServer(srv, leader)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

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
			cfg := Config{Cluster: "main", Node: "pg-a2", PGData: t.TempDir(), TTL: 5 * time.Second, SafetyMargin: time.Second, Loop: 100 * time.Millisecond}
			pg := &stoppedPG{}
			failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "pgdr_agent_lease_renewal_failures_total"})
			k := New(cfg, NewHolder(Start(time.Now(), cfg)), Deps{
				RenewalFailures: failures,
				Session:         func() pgdrv1.AgentServiceClient { return nil },
				DialLeader: func(ctx context.Context) (*grpc.ClientConn, error) {
					return grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				},
				Report:   func() *pgdrv1.HealthReport { return tc.r },
				Epoch:    &epoch.Tracker{},
				PG:       pg,
				Failsafe: noFailsafe{},
			})
			if tc.signal {
				if err := os.WriteFile(filepath.Join(cfg.PGData, "standby.signal"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			leader.mu.Lock()
			leader.renewals = 0
			leader.mu.Unlock()
			var warned []string
			lc := &leaseConn{session: k.deps.Session, dial: k.deps.DialLeader}
			defer lc.close()
			k.round(context.Background(), lc, func(err error) { warned = append(warned, err.Error()) })
			leader.mu.Lock()
			renewals := leader.renewals
			leader.mu.Unlock()
			fenced := k.Fenced()
			_, markerErr := os.Stat(filepath.Join(cfg.PGData, "pgdr.fenced"))
			t.Logf("renewals %d, fenced %q, warnings %q, stops %d", renewals, fenced, warned, pg.stops)
			if renewals != tc.wantRenewals {
				t.Errorf("%d renewals sent, want %d", renewals, tc.wantRenewals)
			}
			var m dto.Metric
			if err := failures.Write(&m); err != nil || int(m.GetCounter().GetValue()) != tc.wantRenewals {
				t.Errorf("renewal failures counted %v (%v), want %d (every renewal was refused)", m.GetCounter().GetValue(), err, tc.wantRenewals)
			}
			if (fenced != "") != tc.wantFenced || (markerErr == nil) != tc.wantFenced {
				t.Errorf("fenced %q (marker written: %v), want fenced %v", fenced, markerErr == nil, tc.wantFenced)
			}
			if tc.wantFenced && (pg.stops != 1 || !strings.Contains(fenced, "the primary is pg-a1")) {
				t.Errorf("fenced %q with %d stops, want one stop for the refusal naming pg-a1", fenced, pg.stops)
			}
		})
	}
}

// TestKeeperKick: a kick runs a round at once rather than at the next
// failover.loop tick, so that a node that just became primary asks for
// its first grant (which /primary waits for) without waiting up to a loop.
func TestKeeperKick(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leader := &fakeLeader{renewal: &pgdrv1.RenewLeaseResponse{Granted: true, Primary: "pg-a2", Epoch: 5, TtlMs: 5000}}
	srv := grpc.NewServer()
	pgdrv1.RegisterAgentServiceServer(srv, leader)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	renewals := func() int {
		leader.mu.Lock()
		defer leader.mu.Unlock()
		return leader.renewals
	}

	// A loop far longer than the test: only the first round and kicks renew.
	cfg := Config{Cluster: "main", Node: "pg-a2", PGData: t.TempDir(), TTL: 5 * time.Second, SafetyMargin: time.Second, Loop: time.Hour}
	writable := &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", PostmasterAlive: true, Connectable: true}
	var ep epoch.Tracker
	ep.See(5)
	k := New(cfg, NewHolder(Start(time.Now(), cfg)), Deps{
		Session: func() pgdrv1.AgentServiceClient { return nil },
		DialLeader: func(ctx context.Context) (*grpc.ClientConn, error) {
			return grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
		Report:   func() *pgdrv1.HealthReport { return writable },
		Epoch:    &ep,
		PG:       &stoppedPG{},
		Failsafe: noFailsafe{},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitRenewals := func(n int, why string) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); renewals() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d renewals within 3 s, want %d (%s)", renewals(), n, why)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRenewals(1, "the first round")
	k.Kick()
	waitRenewals(2, "after a kick")
	k.Kick()
	k.Kick()
	waitRenewals(3, "after two kicks")
	if granted, fenced, _ := k.Status(); !granted || fenced != "" {
		t.Errorf("granted %v fenced %q, want a granted lease", granted, fenced)
	}
}
