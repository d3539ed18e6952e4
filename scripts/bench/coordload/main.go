// Command coordload simulates many pgdr agents against a coordinator
// cluster, for scripts/bench/coordinator.sh (make bench-coordinator).
//
// Load mode (the default): --agents N goroutines, spread over --clusters K
// clusters, each behaving like pgdr-agent's coordinator client: ask a
// coordinator who leads (Leader), Register its member with the leader, open
// the Report stream and send a HealthReport every --interval (Time = now,
// each agent at its own random phase), open the Commands stream and answer
// every ping with CompleteCommand. On any error the agent starts again from
// Leader, with pgdr-agent's backoff (100 ms doubling to 2 s, reset after a
// session that lasted 10 s). Agents share a few gRPC connections
// (--per-conn agents per connection and coordinator) so that the client is
// not the bottleneck. Connection starts are spread over --ramp. It runs for
// --duration or until SIGINT/SIGTERM, then prints one JSON object on stdout;
// a progress line goes to stderr every --status-every.
//
// Watch mode (--watch): measures a failover after the caller killed the
// leader at --since (Unix ns). It polls /health of the surviving
// coordinators (--http, host:port list) every --poll until they all name
// the same new leader, then polls that leader's /metrics every
// --scrape-every (200 ms) until all agents have both streams open there
// (pgdr_coordinator_agent_streams >= 2*--agents) and
// pgdr_coordinator_reports_total rises at >= 95% of the expected rate
// (agents per interval) over the following --rate-window. If leadership
// moves again meanwhile, it follows the new leader. Prints one JSON object.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The agent client's timings, as in agent/daemon/coordinator.go.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 2 * time.Second
	rpcTimeout = 3 * time.Second
)

var regions = []string{"us-east-1", "eu-west-1", "ap-south-1"}

type options struct {
	addresses   []string
	ca          string
	tokenFile   string
	agents      int
	clusters    int
	duration    time.Duration
	interval    time.Duration
	ramp        time.Duration
	perConn     int
	statusEvery time.Duration

	watch       bool
	httpAddrs   []string
	dead        string
	since       int64
	poll        time.Duration
	timeout     time.Duration
	rateWindow  time.Duration
	scrapeEvery time.Duration
}

func main() {
	var o options
	var addrs, httpAddrs string
	flag.StringVar(&addrs, "addresses", "", "coordinator API addresses host:port, comma-separated")
	flag.StringVar(&o.ca, "ca", "", "CA file that signed the coordinators' certificates")
	flag.StringVar(&o.tokenFile, "token-file", "", "file holding a bearer token of role agent")
	flag.IntVar(&o.agents, "agents", 1000, "simulated agents")
	flag.IntVar(&o.clusters, "clusters", 0, "clusters to spread the agents over (default: one per 100 agents)")
	flag.DurationVar(&o.duration, "duration", time.Minute, "how long to run (0: until SIGINT/SIGTERM)")
	flag.DurationVar(&o.interval, "interval", time.Second, "health report interval of each agent")
	flag.DurationVar(&o.ramp, "ramp", 5*time.Second, "spread the agents' first connection over this long")
	flag.IntVar(&o.perConn, "per-conn", 250, "agents sharing one gRPC connection to a coordinator")
	flag.DurationVar(&o.statusEvery, "status-every", 5*time.Second, "progress line on stderr this often (0: none)")
	flag.BoolVar(&o.watch, "watch", false, "watch mode: measure a failover (see the package comment)")
	flag.StringVar(&httpAddrs, "http", "", "watch: the surviving coordinators' http.listen addresses, comma-separated")
	flag.StringVar(&o.dead, "dead", "", "watch: name of the killed leader")
	flag.Int64Var(&o.since, "since", 0, "watch: Unix time in ns when the leader was killed (default: now)")
	flag.DurationVar(&o.poll, "poll", 20*time.Millisecond, "watch: /health poll interval")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "watch: give up after this long")
	flag.DurationVar(&o.scrapeEvery, "scrape-every", 200*time.Millisecond, "watch: new leader's /metrics poll interval")
	flag.DurationVar(&o.rateWindow, "rate-window", 2*time.Second, "watch: window over which the report rate must hold")
	flag.Parse()
	o.addresses = splitList(addrs)
	o.httpAddrs = splitList(httpAddrs)
	if o.clusters <= 0 {
		o.clusters = max(1, (o.agents+99)/100)
	}
	if o.perConn <= 0 {
		o.perConn = 250
	}
	var err error
	if o.watch {
		err = runWatch(o)
	} else {
		err = runLoad(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordload:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// bearer sends the token with every call, over TLS only.
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// pool holds the shared connections: per coordinator address, one
// connection per perConn agents, created on first use.
type pool struct {
	opts    []grpc.DialOption
	perConn int
	mu      sync.Mutex
	conns   map[string][]*grpc.ClientConn
	n       int
}

func (p *pool) client(addr string, agent int) (pgdrv1.AgentServiceClient, error) {
	i := agent / p.perConn
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.conns[addr]
	if len(cs) <= i {
		cs = append(cs, make([]*grpc.ClientConn, i+1-len(cs))...)
		p.conns[addr] = cs
	}
	if cs[i] == nil {
		c, err := grpc.NewClient(addr, p.opts...)
		if err != nil {
			return nil, err
		}
		cs[i] = c
		p.n++
	}
	return pgdrv1.NewAgentServiceClient(cs[i]), nil
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cs := range p.conns {
		for _, c := range cs {
			if c != nil {
				c.Close()
			}
		}
	}
}

// stats are shared by all agents.
type stats struct {
	start          time.Time
	connected      atomic.Int64 // agents with both streams open now
	maxConnected   atomic.Int64
	allConnectedNS atomic.Int64 // first time connected reached N (ns after start)
	sessions       atomic.Int64
	reports        atomic.Int64
	pings          atomic.Int64
	errors         atomic.Int64

	mu       sync.Mutex
	byCode   map[string]int
	firstErr map[string]string
	regFirst []time.Duration // first successful Register of each agent
	regAgain []time.Duration // later ones (after a reconnection)
}

func (s *stats) fail(stage string, err error) {
	s.errors.Add(1)
	key := stage + ":" + status.Code(err).String()
	s.mu.Lock()
	s.byCode[key]++
	if _, ok := s.firstErr[key]; !ok {
		s.firstErr[key] = err.Error()
	}
	s.mu.Unlock()
}

func (s *stats) registered(d time.Duration, first bool) {
	s.mu.Lock()
	if first {
		s.regFirst = append(s.regFirst, d)
	} else {
		s.regAgain = append(s.regAgain, d)
	}
	s.mu.Unlock()
}

type agent struct {
	id         int
	cluster    string
	name       string
	region     string
	primary    bool
	sysid      uint64
	o          *options
	p          *pool
	s          *stats
	next       int // the address asked first for the leader
	registered bool
	lsn        uint64
}

type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

func runLoad(o options) error {
	if len(o.addresses) == 0 || o.ca == "" || o.tokenFile == "" {
		return errors.New("--addresses, --ca and --token-file are required")
	}
	if o.agents <= 0 || o.interval <= 0 {
		return errors.New("--agents and --interval must be positive")
	}
	tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: o.ca})
	if err != nil {
		return err
	}
	tok, err := config.ReadSecretFile(o.tokenFile)
	if err != nil {
		return err
	}
	p := &pool{perConn: o.perConn, conns: map[string][]*grpc.ClientConn{},
		opts: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc)), grpc.WithPerRPCCredentials(bearer{tok})}}
	defer p.close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	s := &stats{start: time.Now(), byCode: map[string]int{}, firstErr: map[string]string{}}
	s.allConnectedNS.Store(-1)

	perCluster := (o.agents + o.clusters - 1) / o.clusters
	var wg sync.WaitGroup
	for i := 0; i < o.agents; i++ {
		ci, mi := i/perCluster, i%perCluster
		a := &agent{id: i, o: &o, p: p, s: s,
			cluster: fmt.Sprintf("bench-%04d", ci), name: fmt.Sprintf("b%04d-n%03d", ci, mi),
			region: regions[mi%len(regions)], primary: mi == 0, sysid: 7000000000000000000 + uint64(ci),
			next: i % len(o.addresses), lsn: 0x3000000}
		var delay time.Duration
		if o.ramp > 0 {
			delay = time.Duration(int64(o.ramp) * int64(i) / int64(o.agents))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.run(ctx, delay)
		}()
	}
	if o.statusEvery > 0 {
		go func() {
			t := time.NewTicker(o.statusEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fmt.Fprintf(os.Stderr, "[coordload %5.1fs] connected %d/%d, sessions %d, reports %d, pings %d, errors %d\n",
						time.Since(s.start).Seconds(), s.connected.Load(), o.agents, s.sessions.Load(), s.reports.Load(), s.pings.Load(), s.errors.Load())
				}
			}
		}()
	}
	<-ctx.Done()
	connectedAtEnd := s.connected.Load()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "coordload: some agents did not stop within 10 s")
	}
	return printSummary(o, s, p, connectedAtEnd)
}

func printSummary(o options, s *stats, p *pool, connectedAtEnd int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	q := func(ds []time.Duration, f float64) any {
		if len(ds) == 0 {
			return nil
		}
		c := slices.Clone(ds)
		slices.Sort(c)
		i := int(f*float64(len(c))+0.999999) - 1
		return ms(c[max(0, min(i, len(c)-1))])
	}
	var allConn any
	if ns := s.allConnectedNS.Load(); ns >= 0 {
		allConn = float64(ns) / 1e9
	}
	p.mu.Lock()
	nconn := p.n
	p.mu.Unlock()
	out := map[string]any{
		"agents":                o.agents,
		"clusters":              o.clusters,
		"interval_s":            o.interval.Seconds(),
		"grpc_connections":      nconn,
		"elapsed_s":             time.Since(s.start).Seconds(),
		"agents_connected":      connectedAtEnd,
		"agents_connected_max":  s.maxConnected.Load(),
		"all_connected_after_s": allConn,
		"sessions":              s.sessions.Load(),
		"reports_sent":          s.reports.Load(),
		"pings_answered":        s.pings.Load(),
		"errors":                s.errors.Load(),
		"errors_by_stage_code":  s.byCode,
		"first_error_by_code":   s.firstErr,
		"registrations":         len(s.regFirst),
		"register_p50_ms":       q(s.regFirst, 0.50),
		"register_p99_ms":       q(s.regFirst, 0.99),
		"register_max_ms":       q(s.regFirst, 1),
		"reregistrations":       len(s.regAgain),
		"reregister_p50_ms":     q(s.regAgain, 0.50),
		"reregister_p99_ms":     q(s.regAgain, 0.99),
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// run keeps the agent's session with the leader until ctx ends.
func (a *agent) run(ctx context.Context, delay time.Duration) {
	if !sleep(ctx, delay) {
		return
	}
	// Each agent samples at its own phase, as real agents started at
	// different times do; the phase survives reconnections.
	if !sleep(ctx, rand.N(a.o.interval)) {
		return
	}
	tick := time.NewTicker(a.o.interval)
	defer tick.Stop()
	backoff := backoffMin
	for ctx.Err() == nil {
		started := time.Now()
		err := a.session(ctx, tick)
		if ctx.Err() != nil {
			return
		}
		stage := "session"
		var se *stageError
		if errors.As(err, &se) {
			stage = se.stage
		}
		a.s.fail(stage, err)
		if time.Since(started) > 10*time.Second {
			backoff = backoffMin
		}
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, backoffMax)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// findLeader asks the coordinators in turn who leads.
func (a *agent) findLeader(ctx context.Context) (*pgdrv1.LeaderResponse, error) {
	n := len(a.o.addresses)
	var last error
	for i := 0; i < n; i++ {
		idx := (a.next + i) % n
		cli, err := a.p.client(a.o.addresses[idx], a.id)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		resp, err := cli.Leader(rctx, &pgdrv1.LeaderRequest{})
		cancel()
		if err == nil && resp.GetKnown() && resp.GetApiAddress() != "" {
			a.next = idx
			return resp, nil
		}
		if err == nil {
			err = status.Error(codes.Unavailable, "no leader elected yet")
		}
		last = err
	}
	a.next = (a.next + 1) % n
	return nil, last
}

func (a *agent) member() *pgdrv1.Member {
	return &pgdrv1.Member{Name: a.name, Cluster: a.cluster, Region: a.region,
		Dsn: fmt.Sprintf("host=10.%d.%d.%d port=5432", a.id/65536%256, a.id/256%256, a.id%256), SystemIdentifier: a.sysid}
}

func (a *agent) report() *pgdrv1.HealthReport {
	a.lsn += 8192
	r := &pgdrv1.HealthReport{Cluster: a.cluster, Node: a.name, Time: timestamppb.Now(),
		PostmasterAlive: true, Connectable: true, InRecovery: !a.primary, Timeline: 1,
		CurrentLsn: a.lsn, PgdataFreeBytes: 50 << 30, PgwalFreeBytes: 50 << 30,
		SystemIdentifier: a.sysid, PgVersion: "15.8", Epoch: 1}
	if !a.primary {
		r.ReceiveLsn, r.ReplayLsn, r.Streaming = a.lsn, a.lsn, true
	}
	return r
}

// session: find the leader, register, stream reports and answer commands
// until something fails.
func (a *agent) session(ctx context.Context, tick *time.Ticker) error {
	a.s.sessions.Add(1)
	leader, err := a.findLeader(ctx)
	if err != nil {
		return &stageError{"leader", err}
	}
	cli, err := a.p.client(leader.GetApiAddress(), a.id)
	if err != nil {
		return &stageError{"dial", err}
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	t0 := time.Now()
	_, err = cli.Register(rctx, &pgdrv1.RegisterRequest{Member: a.member()})
	cancel()
	if err != nil {
		return &stageError{"register", err}
	}
	a.s.registered(time.Since(t0), !a.registered)
	a.registered = true

	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	reports, err := cli.Report(sctx)
	if err != nil {
		return &stageError{"report", err}
	}
	cmds, err := cli.Commands(sctx, &pgdrv1.CommandsRequest{Cluster: a.cluster, Node: a.name})
	if err != nil {
		return &stageError{"commands", err}
	}
	if n := a.s.connected.Add(1); n == int64(a.o.agents) {
		a.s.allConnectedNS.CompareAndSwap(-1, int64(time.Since(a.s.start)))
		a.s.maxConnected.Store(n)
	} else if n > a.s.maxConnected.Load() {
		a.s.maxConnected.Store(n) // approximate under races; informational
	}
	defer a.s.connected.Add(-1)

	errc := make(chan error, 1)
	go func() {
		for {
			cmd, err := cmds.Recv()
			if err != nil {
				errc <- &stageError{"commands", err}
				return
			}
			res := &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: a.cluster, Node: a.name, Ok: true}
			if cmd.GetPing() == nil && cmd.GetCheckNow() == nil {
				res.Ok, res.Error = false, "coordload: unknown command"
			}
			cctx, cancel := context.WithTimeout(sctx, rpcTimeout)
			_, err = cli.CompleteCommand(cctx, res)
			cancel()
			if err != nil {
				errc <- &stageError{"complete", err}
				return
			}
			a.s.pings.Add(1)
		}
	}()

	// Like pgdr-agent, send the latest sample at once, then every tick.
	select {
	case <-tick.C:
	default:
	}
	for {
		if err := reports.Send(a.report()); err != nil {
			if errors.Is(err, io.EOF) {
				_, err = reports.CloseAndRecv()
			}
			return &stageError{"report", err}
		}
		a.s.reports.Add(1)
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-tick.C:
		}
	}
}
