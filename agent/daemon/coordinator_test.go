package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakeCluster is a set of fake coordinators sharing one idea of who leads.
type fakeCluster struct {
	mu     sync.Mutex
	leader string // name
	coords map[string]*fakeCoord
}

func (fc *fakeCluster) leaderOf() (string, string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if c := fc.coords[fc.leader]; c != nil {
		return c.name, c.addr
	}
	return "", ""
}

// fakeCoord is one coordinator's AgentService.
type fakeCoord struct {
	pgdrv1.UnimplementedAgentServiceServer
	fc   *fakeCluster
	name string
	addr string
	srv  *grpc.Server
	cmds chan *pgdrv1.AgentCommand

	mu sync.Mutex
	// renewal, when set, answers RenewLease (Unimplemented otherwise).
	renewal    *pgdrv1.RenewLeaseResponse
	renewals   int
	members    []*pgdrv1.Member
	reports    []*pgdrv1.HealthReport
	results    []*pgdrv1.CommandResult
	badAuth    int
	notLeaders int
	// completeGate, when set, holds CompleteCommand until it is closed (or
	// the call ends), which holds up the agent's carrying out of orders.
	completeGate chan struct{}
}

func (c *fakeCoord) isLeader() bool { n, _ := c.fc.leaderOf(); return n == c.name }

func (c *fakeCoord) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer agent-token" {
		c.mu.Lock()
		c.badAuth++
		c.mu.Unlock()
		return status.Error(codes.Unauthenticated, "no token")
	}
	return nil
}

func (c *fakeCoord) leaderOnly(ctx context.Context) error {
	if err := c.auth(ctx); err != nil {
		return err
	}
	if !c.isLeader() {
		c.mu.Lock()
		c.notLeaders++
		c.mu.Unlock()
		n, _ := c.fc.leaderOf()
		return status.Errorf(codes.FailedPrecondition, "not the leader; the leader is %s", n)
	}
	return nil
}

func (c *fakeCoord) Leader(ctx context.Context, _ *pgdrv1.LeaderRequest) (*pgdrv1.LeaderResponse, error) {
	if err := c.auth(ctx); err != nil {
		return nil, err
	}
	n, a := c.fc.leaderOf()
	resp := &pgdrv1.LeaderResponse{Name: n, ApiAddress: a, Known: n != ""}
	if n == c.name {
		resp.Now = timestamppb.Now()
	}
	return resp, nil
}

func (c *fakeCoord) RenewLease(ctx context.Context, req *pgdrv1.RenewLeaseRequest) (*pgdrv1.RenewLeaseResponse, error) {
	if err := c.leaderOnly(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.renewal == nil {
		return nil, status.Error(codes.Unimplemented, "RenewLease not set up in this test")
	}
	c.renewals++
	return c.renewal, nil
}

func (c *fakeCoord) Register(ctx context.Context, req *pgdrv1.RegisterRequest) (*pgdrv1.RegisterResponse, error) {
	if err := c.leaderOnly(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.members = append(c.members, req.GetMember())
	c.mu.Unlock()
	return &pgdrv1.RegisterResponse{Epoch: 5, Primary: "pg-a1", Now: timestamppb.Now()}, nil
}

func (c *fakeCoord) Report(st grpc.ClientStreamingServer[pgdrv1.HealthReport, pgdrv1.ReportSummary]) error {
	if err := c.leaderOnly(st.Context()); err != nil {
		return err
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.reports = append(c.reports, r)
		c.mu.Unlock()
	}
}

func (c *fakeCoord) Commands(req *pgdrv1.CommandsRequest, st grpc.ServerStreamingServer[pgdrv1.AgentCommand]) error {
	if err := c.leaderOnly(st.Context()); err != nil {
		return err
	}
	if req.GetCluster() != "main" || req.GetNode() != "pg-a2" {
		return status.Errorf(codes.InvalidArgument, "commands for %s/%s", req.GetCluster(), req.GetNode())
	}
	for {
		select {
		case <-st.Context().Done():
			return nil
		case cmd := <-c.cmds:
			if err := st.Send(cmd); err != nil {
				return err
			}
		}
	}
}

func (c *fakeCoord) CompleteCommand(ctx context.Context, res *pgdrv1.CommandResult) (*pgdrv1.CommandResultAck, error) {
	if err := c.leaderOnly(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	gate := c.completeGate
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.mu.Lock()
	c.results = append(c.results, res)
	c.mu.Unlock()
	return &pgdrv1.CommandResultAck{}, nil
}

func (c *fakeCoord) snapshot() (members []*pgdrv1.Member, reports []*pgdrv1.HealthReport, results []*pgdrv1.CommandResult, badAuth, notLeaders int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*pgdrv1.Member(nil), c.members...), append([]*pgdrv1.HealthReport(nil), c.reports...),
		append([]*pgdrv1.CommandResult(nil), c.results...), c.badAuth, c.notLeaders
}

// TestCoordinatorClient: the daemon asks a follower who leads, registers
// with the leader (token sent, password removed from the DSN), streams
// reports, answers ping and check_now, refuses a stale epoch, and follows
// the leadership to another coordinator when the leader goes away.
// fakeSession starts two fake coordinators, c1 and c2 (c2 leads), and a
// daemon for node pg-a2 of cluster main using them, with tweak applied
// before it runs; the daemon stops when the test ends.
func fakeSession(t *testing.T, tweak func(*Daemon)) (*fakeCluster, *Daemon) {
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
	fc := &fakeCluster{coords: map[string]*fakeCoord{}}
	var addrs []string
	for _, name := range []string{"c1", "c2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c := &fakeCoord{fc: fc, name: name, addr: ln.Addr().String(), cmds: make(chan *pgdrv1.AgentCommand, 4),
			srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(stc)))}
		pgdrv1.RegisterAgentServiceServer(c.srv, c)
		go c.srv.Serve(ln)
		t.Cleanup(c.srv.Stop)
		fc.coords[name] = c
		addrs = append(addrs, c.addr)
	}
	fc.leader = "c2"
	os.WriteFile(filepath.Join(dir, "token"), []byte("agent-token\n"), 0o600)

	const sysid = 7300000000000000042
	pgdata := testutil.FakePGData(t, sysid)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster: main
node: {name: pg-a2, region: r1, tags: [no-failover], priority: 3}
postgres: {pgdata: %s, dsn: 'host=127.0.0.1 port=1 user=postgres password=hunter2'}
repos: [{url: 'file://%s'}]
encryption: {disabled: true}
agent: {socket: %s}
health: {interval: 100ms, listen: '127.0.0.1:18008'}
coordinator: {addresses: [%q, %q], ca_file: %s, token_file: %s}
`, pgdata, t.TempDir(), filepath.Join(dir, "agent.sock"), addrs[0], addrs[1], filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token"))))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Health.Listen = "" // the test reads metrics through the handler
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, sh, log)
	if tweak != nil {
		tweak(d)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the daemon did not stop")
		}
	})
	return fc, d
}

func TestCoordinatorClient(t *testing.T) {
	fc, d := fakeSession(t, nil)
	c1, c2 := fc.coords["c1"], fc.coords["c2"]
	testutil.WaitFor(t, 30*time.Second, "registration and reports at the leader c2", func() (bool, error) {
		m, r, _, bad, _ := c2.snapshot()
		return len(m) > 0 && len(r) >= 3, fmt.Errorf("%d registrations, %d reports, %d unauthenticated", len(m), len(r), bad)
	})
	members, reports, _, _, _ := c2.snapshot()
	m := members[0]
	if m.Name != "pg-a2" || m.Cluster != "main" || m.Region != "r1" || m.Priority != 3 || len(m.Tags) != 1 || m.Tags[0] != "no-failover" {
		t.Errorf("member %v", m)
	}
	if strings.Contains(m.Dsn, "hunter2") || m.Dsn != "host=127.0.0.1 port=1 user=postgres" {
		t.Errorf("member DSN %q", m.Dsn)
	}
	if r := reports[len(reports)-1]; r.Cluster != "main" || r.Node != "pg-a2" || r.Connectable || r.Error == "" || r.Epoch != 5 {
		t.Errorf("report %v", r)
	}
	if m1, _, _, _, _ := c1.snapshot(); len(m1) != 0 {
		t.Errorf("the follower registered %v", m1)
	}
	_, metrics := get(t, d.Handler(), "GET", "/metrics")
	if !strings.Contains(metrics, `pgdr_agent_coordinator_connected{cluster="main",node="pg-a2"} 1`) {
		t.Errorf("metrics while connected:\n%s", metrics)
	}

	c2.cmds <- &pgdrv1.AgentCommand{Id: "cmd-1", Cluster: "main", Node: "pg-a2", Epoch: 5, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	c2.cmds <- &pgdrv1.AgentCommand{Id: "cmd-2", Cluster: "main", Node: "pg-a2", Epoch: 5, Kind: &pgdrv1.AgentCommand_CheckNow{CheckNow: &pgdrv1.CheckNow{}}}
	c2.cmds <- &pgdrv1.AgentCommand{Id: "cmd-3", Cluster: "main", Node: "pg-a2", Epoch: 4, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	testutil.WaitFor(t, 30*time.Second, "three command results", func() (bool, error) {
		_, _, res, _, _ := c2.snapshot()
		return len(res) == 3, fmt.Errorf("%d results", len(res))
	})
	_, _, results, _, _ := c2.snapshot()
	if r := results[0]; r.Id != "cmd-1" || !r.Ok || r.Node != "pg-a2" {
		t.Errorf("ping: %v", r)
	}
	if r := results[1]; r.Id != "cmd-2" || !r.Ok || !strings.Contains(r.Output, "role=stopped") {
		t.Errorf("check_now: %v", r)
	}
	if r := results[2]; r.Id != "cmd-3" || r.Ok || !strings.Contains(r.Error, "stale epoch") {
		t.Errorf("stale epoch: %v", r)
	}

	// The leader goes away and c1 takes over.
	fc.mu.Lock()
	fc.leader = "c1"
	fc.mu.Unlock()
	c2.srv.Stop()
	testutil.WaitFor(t, 30*time.Second, "registration and reports at the new leader c1", func() (bool, error) {
		m, r, _, _, _ := c1.snapshot()
		return len(m) > 0 && len(r) >= 2, fmt.Errorf("%d registrations, %d reports", len(m), len(r))
	})
	c1.cmds <- &pgdrv1.AgentCommand{Id: "cmd-4", Epoch: 6, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	testutil.WaitFor(t, 30*time.Second, "ping through the new leader", func() (bool, error) {
		_, _, res, _, _ := c1.snapshot()
		return len(res) == 1 && res[0].Ok, errors.New("no result")
	})
	if _, _, _, bad, _ := c1.snapshot(); bad != 0 {
		t.Errorf("%d calls without the token", bad)
	}
}

// TestReportEchoesReceivedCommand: review 4 of issue 12. Every report
// names the latest command the agent had received before its checks
// began (after_command_id), counted from the command's arrival on the
// stream, not from when it was carried out: the leader that sent it knows
// the report was sampled after it went out. Before any command arrived a
// report names none.
func TestReportEchoesReceivedCommand(t *testing.T) {
	fc, _ := fakeSession(t, nil)
	c2 := fc.coords["c2"]
	gate := make(chan struct{})
	c2.mu.Lock()
	c2.completeGate = gate
	c2.mu.Unlock()
	released := false
	defer func() {
		if !released {
			close(gate)
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "reports at the leader c2", func() (bool, error) {
		_, r, _, _, _ := c2.snapshot()
		return len(r) >= 2, fmt.Errorf("%d reports", len(r))
	})
	_, reports, _, _, _ := c2.snapshot()
	for _, r := range reports {
		if r.AfterCommandId != "" {
			t.Fatalf("a report before any command names command %q", r.AfterCommandId)
		}
	}
	// cmd-1 is carried out and its completion held up, so cmd-2 is
	// received and waits in the queue.
	c2.cmds <- &pgdrv1.AgentCommand{Id: "cmd-1", Cluster: "main", Node: "pg-a2", Epoch: 5, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	c2.cmds <- &pgdrv1.AgentCommand{Id: "cmd-2", Cluster: "main", Node: "pg-a2", Epoch: 5, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}
	testutil.WaitFor(t, 30*time.Second, "a report echoing cmd-2, received and not yet carried out", func() (bool, error) {
		_, r, _, _, _ := c2.snapshot()
		var last string
		for _, r := range r {
			if r.AfterCommandId == "cmd-2" {
				return true, nil
			}
			last = r.AfterCommandId
		}
		return false, fmt.Errorf("%d reports, the last echoing %q", len(r), last)
	})
	if _, _, res, _, _ := c2.snapshot(); len(res) != 0 {
		t.Fatalf("results %v completed while the gate was closed", res)
	}
	released = true
	close(gate)
	testutil.WaitFor(t, 30*time.Second, "both results", func() (bool, error) {
		_, _, res, _, _ := c2.snapshot()
		return len(res) == 2, fmt.Errorf("%d results", len(res))
	})
}
