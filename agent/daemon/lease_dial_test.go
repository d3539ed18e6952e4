package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestLeaseRenewsWithoutSession: with no coordinator session up, the
// lease loop still renews: leaderDialer asks a configured coordinator (a
// follower here) who leads, over TLS with the agent's token, and renews
// with the leader it names. (Before issue 15 TestLeaseRoundPartialReport
// went through this path; its move to agent/lease replaced the dialer with
// an insecure direct dial, leaving the daemon's dialer untested.)
func TestLeaseRenewsWithoutSession(t *testing.T) {
	d, fc := leaseLab(t, "{loop: 100ms, lease_ttl: 5s, safety_margin: 1s}")
	d.monitor.SetLatest(&pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true})
	if d.sess.Client() != nil {
		t.Fatal("a session is up; the test needs none")
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); d.lease.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })
	testutil.WaitFor(t, 10*time.Second, "a renewal granted by the leader without a session", func() (bool, error) {
		fc.coords["c2"].mu.Lock()
		n := fc.coords["c2"].renewals
		fc.coords["c2"].mu.Unlock()
		return n > 0 && d.lease.Granted(), fmt.Errorf("%d renewals at the leader, granted %v, fenced %q", n, d.lease.Granted(), d.lease.Fenced())
	})
	_, _, _, badAuth, notLeaders := fc.coords["c1"].snapshot()
	if badAuth != 0 || notLeaders != 0 {
		t.Fatalf("the follower saw %d unauthenticated calls and %d calls for the leader", badAuth, notLeaders)
	}
}

// leaseLab is a daemon whose coordinators are two fake coordinators over
// TLS (c2 leads and grants renewals) with the failover settings failover, and
// no session up.
func leaseLab(t *testing.T, failover string) (*Daemon, *fakeCluster) {
	t.Helper()
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
	fc := &fakeCluster{coords: map[string]*fakeCoord{}, leader: "c2"}
	var addrs []string
	for _, name := range []string{"c1", "c2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c := &fakeCoord{fc: fc, name: name, addr: ln.Addr().String(), srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(stc))),
			renewal: &pgdrv1.RenewLeaseResponse{Granted: true, Primary: "pg-a2", Epoch: 4, TtlMs: 5000, SafetyMarginMs: 1000}}
		pgdrv1.RegisterAgentServiceServer(c.srv, c)
		go c.srv.Serve(ln)
		t.Cleanup(c.srv.Stop)
		fc.coords[name] = c
		addrs = append(addrs, c.addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("agent-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	coord := fmt.Sprintf("coordinator: {addresses: [%q, %q], ca_file: %s, token_file: %s}\nfailover: %s\n",
		addrs[0], addrs[1], filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token"), failover)
	d := New(testConfig(t, coord), nil, slog.New(slog.DiscardHandler))
	if d.sess.Client() != nil {
		t.Fatal("a session is up; the test needs none")
	}
	return d, fc
}

// TestFirstPrimaryReportKicksLease: an agent started next to a running
// primary (a restart, an upgrade) asks for its lease as soon as its first
// report says primary. The lease loop's first round runs before any
// report and finds nothing to renew; without the kick the first grant
// waited a whole failover.loop, and /primary answered 503 that much
// longer, eating into the agent restart HAProxy's fall 3 tolerates.
// The report is published before the loop starts, so that its kick is
// pending when the loop's first round ends: two renewals at once, where
// the loop alone (failover.loop 50s) makes one.
func TestFirstPrimaryReportKicksLease(t *testing.T) {
	d, fc := leaseLab(t, "{loop: 50s, lease_ttl: 60s, safety_margin: 5s}")
	r := &pgdrv1.HealthReport{Cluster: "main", Node: "pg-a2", Time: timestamppb.Now(), PostmasterAlive: true, Connectable: true}
	d.monitor.SetLatest(r)
	d.published(r) // the monitor's first round's callback
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); d.lease.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })
	testutil.WaitFor(t, 5*time.Second, "a renewal for the first report's kick, besides the loop's first round", func() (bool, error) {
		fc.coords["c2"].mu.Lock()
		n := fc.coords["c2"].renewals
		fc.coords["c2"].mu.Unlock()
		return n >= 2, fmt.Errorf("%d renewals at the leader", n)
	})
}
