package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Lease timings of these tests (failover.*).
const (
	leaseTTL    = 3 * time.Second
	leaseMargin = time.Second
	leaseLoop   = 500 * time.Millisecond
)

// fakeLeader is an in-process coordinator leader: it grants the lease to
// the member it records as primary (as the real one does), hands out
// orders and collects their results. Silenced, it stops answering.
type fakeLeader struct {
	pgdrv1.UnimplementedAgentServiceServer
	addr, dir string
	srv       *grpc.Server

	mu        sync.Mutex
	primary   string
	epoch     uint64
	silent    bool
	lastGrant time.Time // when the last granted renewal was received
	grants    int
	cmds      map[string]chan *pgdrv1.AgentCommand
	results   map[string]*pgdrv1.CommandResult
}

// startFakeLeader serves the fake on loopback with TLS; its CA and a
// token are written into dir for the agents (running as postgres).
func startFakeLeader(t *testing.T, dir string) *fakeLeader {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
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
	os.WriteFile(filepath.Join(dir, "token"), []byte("agent-token\n"), 0o600)
	pgtest.Chown(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLeader{addr: ln.Addr().String(), dir: dir, srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(stc))),
		cmds: map[string]chan *pgdrv1.AgentCommand{}, results: map[string]*pgdrv1.CommandResult{}}
	pgdrv1.RegisterAgentServiceServer(f.srv, f)
	go f.srv.Serve(ln)
	t.Cleanup(f.srv.Stop)
	return f
}

// configLines are the agent's coordinator, failover and health keys.
func (f *fakeLeader) configLines(listen string) string {
	return fmt.Sprintf("health:\n  interval: 250ms\n  listen: %q\ncoordinator:\n  addresses: [%q]\n  ca_file: %s\n  token_file: %s\nfailover: {loop: %s, lease_ttl: %s, safety_margin: %s}\n",
		listen, f.addr, filepath.Join(f.dir, "ca.crt"), filepath.Join(f.dir, "token"), leaseLoop, leaseTTL, leaseMargin)
}

func (f *fakeLeader) set(primary string, epoch uint64) {
	f.mu.Lock()
	f.primary, f.epoch = primary, epoch
	f.mu.Unlock()
}

func (f *fakeLeader) silence() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.silent = true
	return time.Now()
}

func (f *fakeLeader) grantState() (time.Time, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastGrant, f.grants
}

// hang blocks a call while the fake is silent; it reports whether it did.
func (f *fakeLeader) hang(ctx context.Context) bool {
	f.mu.Lock()
	s := f.silent
	f.mu.Unlock()
	if s {
		<-ctx.Done()
	}
	return s
}

func (f *fakeLeader) queue(node string) chan *pgdrv1.AgentCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmds[node] == nil {
		f.cmds[node] = make(chan *pgdrv1.AgentCommand, 8)
	}
	return f.cmds[node]
}

func (f *fakeLeader) Leader(ctx context.Context, _ *pgdrv1.LeaderRequest) (*pgdrv1.LeaderResponse, error) {
	if f.hang(ctx) {
		return nil, ctx.Err()
	}
	return &pgdrv1.LeaderResponse{Name: "c1", ApiAddress: f.addr, Known: true, Now: timestamppb.Now()}, nil
}

func (f *fakeLeader) Register(ctx context.Context, _ *pgdrv1.RegisterRequest) (*pgdrv1.RegisterResponse, error) {
	if f.hang(ctx) {
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &pgdrv1.RegisterResponse{Epoch: f.epoch, Primary: f.primary, Now: timestamppb.Now()}, nil
}

func (f *fakeLeader) Report(st grpc.ClientStreamingServer[pgdrv1.HealthReport, pgdrv1.ReportSummary]) error {
	for {
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
}

func (f *fakeLeader) Commands(req *pgdrv1.CommandsRequest, st grpc.ServerStreamingServer[pgdrv1.AgentCommand]) error {
	q := f.queue(req.GetNode())
	for {
		select {
		case <-st.Context().Done():
			return nil
		case cmd := <-q:
			if err := st.Send(cmd); err != nil {
				return err
			}
		}
	}
}

func (f *fakeLeader) CompleteCommand(ctx context.Context, res *pgdrv1.CommandResult) (*pgdrv1.CommandResultAck, error) {
	f.mu.Lock()
	f.results[res.GetId()] = res
	f.mu.Unlock()
	return &pgdrv1.CommandResultAck{}, nil
}

func (f *fakeLeader) RenewLease(ctx context.Context, req *pgdrv1.RenewLeaseRequest) (*pgdrv1.RenewLeaseResponse, error) {
	received := time.Now()
	if f.hang(ctx) {
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.primary == "":
		return &pgdrv1.RenewLeaseResponse{Epoch: f.epoch, Reason: "no primary recorded yet"}, nil
	case req.GetNode() != f.primary:
		return &pgdrv1.RenewLeaseResponse{Epoch: f.epoch, Primary: f.primary, Reason: fmt.Sprintf("the primary is %s at epoch %d", f.primary, f.epoch)}, nil
	}
	f.lastGrant = received
	f.grants++
	return &pgdrv1.RenewLeaseResponse{Granted: true, TtlMs: leaseTTL.Milliseconds(), SafetyMarginMs: leaseMargin.Milliseconds(), Epoch: f.epoch, Primary: f.primary}, nil
}

// Epoch answers the agent's check right before pg_promote, as the real
// leader does: the recorded epoch and primary.
func (f *fakeLeader) Epoch(ctx context.Context, _ *pgdrv1.EpochRequest) (*pgdrv1.EpochResponse, error) {
	if f.hang(ctx) {
		return nil, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &pgdrv1.EpochResponse{Epoch: f.epoch, Primary: f.primary, Now: timestamppb.Now()}, nil
}

// order sends a command to node and waits for its result.
func (f *fakeLeader) order(t *testing.T, node string, cmd *pgdrv1.AgentCommand, timeout time.Duration) *pgdrv1.CommandResult {
	t.Helper()
	cmd.Node, cmd.Cluster = node, "main"
	cmd.Id = fmt.Sprintf("%s-%s-%d", node, strings.ToLower(fmt.Sprintf("%T", cmd.GetKind())[len("*pgdrv1.AgentCommand_"):]), time.Now().UnixNano())
	f.queue(node) <- cmd
	var res *pgdrv1.CommandResult
	testutil.WaitFor(t, timeout, "the result of "+cmd.Id, func() (bool, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		res = f.results[cmd.Id]
		return res != nil, nil
	})
	return res
}

// writable reports whether the server takes a write now.
func writable(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "INSERT INTO lease_probe VALUES (now())")
	return err
}

// recordLastWrite tries a write on dsn every 20 ms until the returned
// stop is called; stop returns when the last accepted write returned, and
// fails the test when no write got through at all (a check of "the last
// write came before X" would then pass vacuously).
func recordLastWrite(t *testing.T, dsn string) (stop func() time.Time) {
	var mu sync.Mutex
	var last time.Time
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			if writable(dsn) == nil {
				mu.Lock()
				last = time.Now()
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() time.Time {
		t.Helper()
		close(quit)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if last.IsZero() {
			t.Fatal("no write got through while the writer ran: the last-write check would pass vacuously")
		}
		return last
	}
}

// waitGrants waits until the fake has granted a few lease renewals.
func (f *fakeLeader) waitGrants(t *testing.T) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "a few renewals", func() (bool, error) {
		_, n := f.grantState()
		return n >= 3, fmt.Errorf("%d grants", n)
	})
}

// disconnectReplicas stops the replicas' streaming (primary_conninfo
// emptied) and waits until the primary has no replication connection.
func disconnectReplicas(t *testing.T, primary *pgtest.Cluster, replicas ...*pgtest.Cluster) {
	t.Helper()
	for _, r := range replicas {
		r.Exec(t, "ALTER SYSTEM SET primary_conninfo = ''")
		r.Exec(t, "SELECT pg_reload_conf()")
	}
	testutil.WaitFor(t, 30*time.Second, "the replicas to disconnect", func() (bool, error) {
		n := primary.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication")
		return n == "0", fmt.Errorf("%s replication connections", n)
	})
}

// waitRows waits until pg's table rows lists want (src by n).
func waitRows(t *testing.T, pg *pgtest.Cluster, what, want string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, func() (bool, error) {
		got := pg.QueryString(t, "SELECT string_agg(src, ',' ORDER BY n) FROM rows")
		return got == want, fmt.Errorf("rows %q", got)
	})
}

// TestLeaseFencesPrimary: the primary's agent holds the lease while the
// leader grants it; when the leader stops answering, the agent fences its
// PostgreSQL (stopped, marker written, /primary 503) within the TTL, and
// the last write the server accepted precedes the leader's expiry (its
// last receipt of a granted renewal + TTL).
func TestLeaseFencesPrimary(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE lease_probe(t timestamptz)")
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := l.writeConfig(t, "primary-lease.yaml", []string{"file"}, l.identity, 0)
	appendFile(t, cfg, f.configLines(addr))
	logb := startDaemon(t, l, cfg)
	waitProbes(t, 30*time.Second, addr, 200, "/primary")
	f.waitGrants(t)

	// A writer records the last write the server accepted.
	stopWrites := recordLastWrite(t, l.pg.DSN())
	silenced := f.silence()
	testutil.WaitFor(t, leaseTTL, "the primary to be fenced", func() (bool, error) {
		if _, err := os.Stat(filepath.Join(l.pg.PGData, "postmaster.pid")); err == nil {
			return false, fmt.Errorf("PostgreSQL still runs; agent log:\n%s", tail(logb.String(), 1500))
		}
		return true, nil
	})
	fencedAfter := time.Since(silenced)
	lw := stopWrites()
	lastGrant, _ := f.grantState()
	t.Logf("fenced %s after the leader went silent; last write %s after the last grant was received (leader expiry at %s)",
		fencedAfter.Round(time.Millisecond), lw.Sub(lastGrant).Round(time.Millisecond), leaseTTL)
	if !lw.Before(lastGrant.Add(leaseTTL)) {
		t.Errorf("a write was accepted %s after the last grant was received, at or past the leader's expiry (%s)", lw.Sub(lastGrant), leaseTTL)
	}
	if err := writable(l.pg.DSN()); err == nil {
		t.Fatal("the fenced server still takes writes")
	}
	fi, err := health.ReadFenced(l.pg.PGData)
	if err != nil || fi == nil || fi.Node != "pg-a1" || fi.Epoch != 1 || !strings.Contains(fi.Reason, "lease") {
		t.Errorf("fenced marker: %+v %v", fi, err)
	}
	if st, err := os.Stat(health.FencedPath(l.pg.PGData)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("marker mode: %v %v", st, err)
	}
	p, err := getProbe(addr, "/primary")
	if err != nil || p.code != 503 {
		t.Errorf("/primary after fencing: %v %d %s", err, p.code, p.raw)
	}
	testutil.WaitFor(t, 5*time.Second, "the report to say fenced", func() (bool, error) {
		p, err := getProbe(addr, "/health")
		return err == nil && p.body.Role == "fenced", fmt.Errorf("%v %s", err, p.raw)
	})
	if log := logb.String(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "FENCING") {
		t.Errorf("no error-level fencing log:\n%s", tail(log, 2000))
	}
}

func appendFile(t *testing.T, p, s string) {
	t.Helper()
	fh, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// newReplica is a streaming replica of the lab's primary (pg_basebackup
// -R); it waits until the primary has want streaming replicas.
func newReplica(t *testing.T, l *lab, want int) *pgtest.Cluster {
	t.Helper()
	sb := pgtest.Empty(t, pgtest.Options{})
	sb.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(l.pg.Port), "-U", "postgres",
		"-D", sb.PGData, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	sb.AppendConf(t, sb.LocalConf())
	sb.Start(t)
	testutil.WaitFor(t, 60*time.Second, "the replica to stream", func() (bool, error) {
		n := l.pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_replication WHERE state = 'streaming'")
		return n == fmt.Sprint(want), fmt.Errorf("%s streaming; replica log:\n%s", n, tail(sb.Log(), 1500))
	})
	return sb
}

// streamsTo waits until primary shows node streaming.
func streamsTo(t *testing.T, primary *pgtest.Cluster, node string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, node+" streaming from its primary", func() (bool, error) {
		st := primary.QueryString(t, "SELECT coalesce(string_agg(application_name || ':' || state, ','), '') FROM pg_stat_replication")
		return strings.Contains(st, node+":streaming"), fmt.Errorf("pg_stat_replication: %q", st)
	})
}

// TestPromoteFollowRejoin: after the primary is fenced by order (having
// written rows its replicas never got), Promote makes a replica writable
// on a new timeline, Follow re-points the other replica to it, and Rejoin
// rewinds the old primary (data checksums) into a streaming replica of the
// new one, without its diverged rows.
func TestPromoteFollowRejoin(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{checksums: true})
	l.pg.Exec(t, "CREATE TABLE lease_probe(t timestamptz); CREATE TABLE rows(n int, src text); INSERT INTO rows VALUES (1, 'old primary')")
	r1 := newReplica(t, l, 1)
	r2 := newReplica(t, l, 2)
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	nodes := []struct {
		name string
		pg   *pgtest.Cluster
		addr string
	}{{"pg-a1", l.pg, ""}, {"pg-a2", r1, ""}, {"pg-a3", r2, ""}}
	var logs []*testutil.SyncBuffer
	for i := range nodes {
		n := &nodes[i]
		n.addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
		var cfg string
		if n.name == "pg-a1" {
			cfg = l.writeConfig(t, "lease-"+n.name+".yaml", []string{"file"}, l.identity, 0)
		} else {
			cfg = l.writeNodeConfig(t, "lease-"+n.name+".yaml", n.pg, []string{"file"})
			b, _ := os.ReadFile(cfg)
			os.WriteFile(cfg, []byte(strings.Replace(string(b), "name: pg-a2,", "name: "+n.name+",", 1)), 0o644)
		}
		appendFile(t, cfg, f.configLines(n.addr))
		logs = append(logs, startDaemon(t, l, cfg))
	}
	agentLogs := func() string {
		var b strings.Builder
		for i, lg := range logs {
			fmt.Fprintf(&b, "--- %s agent:\n%s\n", nodes[i].name, tail(lg.String(), 1500))
		}
		return b.String()
	}
	waitProbes(t, 30*time.Second, nodes[0].addr, 200, "/primary")
	waitProbes(t, 30*time.Second, nodes[1].addr, 200, "/replica")
	waitProbes(t, 30*time.Second, nodes[2].addr, 200, "/replica")
	streamsTo(t, l.pg, "walreceiver", 10*time.Second)

	// The replicas stop receiving; the old primary writes rows they never get.
	disconnectReplicas(t, l.pg, r1, r2)
	l.pg.Exec(t, "INSERT INTO rows SELECT g, 'diverged' FROM generate_series(2, 1000) g")

	// Fence the old primary by order.
	res := f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Fence{Fence: &pgdrv1.Fence{Reason: "test failover"}}}, 60*time.Second)
	if !res.Ok || res.Error != "" {
		t.Fatalf("fence: %v\n%s", res, agentLogs())
	}
	if err := writable(l.pg.DSN()); err == nil {
		t.Fatal("the fenced old primary still takes writes")
	}
	if fi, _ := health.ReadFenced(l.pg.PGData); fi == nil || !strings.Contains(fi.Reason, "test failover") || fi.Epoch != 2 {
		t.Fatalf("fenced marker: %+v", fi)
	}
	waitProbes(t, 10*time.Second, nodes[0].addr, 503, "/primary")
	// A fenced node is never promoted.
	if res := f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{}}}, 30*time.Second); res.Ok || !strings.Contains(res.Error, "fenced") {
		t.Fatalf("promote of a fenced node: %v", res)
	}

	// (b) Promote pg-a2: the coordinator records it first, then orders.
	f.set("pg-a2", 2)
	res = f.order(t, "pg-a2", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{Reason: "test"}}}, 90*time.Second)
	if !res.Ok || !strings.Contains(res.Output, "timeline 2") {
		t.Fatalf("promote: %v\n%s", res, agentLogs())
	}
	if err := writable(r1.DSN()); err != nil {
		t.Fatalf("the promoted replica does not take writes: %v", err)
	}
	r1.Exec(t, "INSERT INTO rows VALUES (2, 'new primary')")
	waitProbes(t, 30*time.Second, nodes[1].addr, 200, "/primary")
	// A stale order is refused.
	if res := f.order(t, "pg-a2", &pgdrv1.AgentCommand{Epoch: 1, Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{}}}, 30*time.Second); res.Ok || !strings.Contains(res.Error, "stale epoch") {
		t.Fatalf("stale promote: %v", res)
	}

	// (c) Follow: pg-a3 streams from pg-a2.
	res = f.order(t, "pg-a3", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Follow{Follow: &pgdrv1.Follow{Primary: "pg-a2", PrimaryDsn: r1.DSN()}}}, 90*time.Second)
	if !res.Ok {
		t.Fatalf("follow: %v\n%s\nreplica log:\n%s", res, agentLogs(), tail(r2.Log(), 2000))
	}
	streamsTo(t, r1, "pg-a3", 30*time.Second)
	r1.Exec(t, "INSERT INTO rows VALUES (3, 'after follow')")
	waitRows(t, r2, "pg-a3 to replay the new primary's rows", "old primary,new primary,after follow")

	// (d) Rejoin the old primary with pg_rewind. The new primary holds a
	// promotion guard record (as if a promotion of its own were pending):
	// pg_rewind copies it, and the rewound node must not keep it
	// (review 12).
	plantPromotePending(t, r1.PGData)
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 2, Kind: &pgdrv1.AgentCommand_Rejoin{Rejoin: &pgdrv1.Rejoin{Primary: "pg-a2", PrimaryDsn: r1.DSN()}}}, 3*time.Minute)
	if !res.Ok {
		t.Fatalf("rejoin: %v\n%s\nold primary log:\n%s", res, agentLogs(), tail(readFile(l.pg.PGData+".pgdr.log"), 2000))
	}
	t.Logf("rejoin: %s", res.Output)
	streamsTo(t, r1, "pg-a1", 30*time.Second)
	if fi, _ := health.ReadFenced(l.pg.PGData); fi != nil {
		t.Errorf("the marker survived the rejoin: %+v", fi)
	}
	noPromotePending(t, l.pg.PGData)
	r1.Exec(t, "INSERT INTO rows VALUES (4, 'after rejoin')")
	waitRows(t, l.pg, "the old primary to replay the new primary's rows", "old primary,new primary,after follow,after rejoin")
	if got := l.pg.QueryString(t, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Errorf("the rejoined node is not in recovery: %s", got)
	}
	waitProbes(t, 30*time.Second, nodes[0].addr, 200, "/replica")
	waitProbes(t, 10*time.Second, nodes[0].addr, 503, "/primary")
	waitProbes(t, 10*time.Second, nodes[1].addr, 200, "/primary")
}
