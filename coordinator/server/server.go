package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/outcome"
	"github.com/pgdr/pgdr/coordinator/schedule"
	"github.com/pgdr/pgdr/pkg/gossip"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// applyTimeout bounds one Raft apply (enqueue and commit).
const applyTimeout = 5 * time.Second

// Options are knobs tests and labs set besides the configuration file.
type Options struct {
	// GossipTune shortens memberlist timers (loopback labs).
	GossipTune func(*memberlist.Config)
	// Bootstrap allows forming a new Raft cluster from the configuration's
	// bootstrap list when the data directory holds no Raft state (and no
	// bootstrap peer answers that it holds some). Without it a node with no
	// state waits to be added, once its peers answer that their
	// configuration does not list it (decideEmptyStart): a member whose
	// data was lost must neither form a second cluster nor vote with an
	// empty log.
	Bootstrap bool
	// ForceEmpty starts Raft on an empty data directory although a peer
	// lists this node in its configuration, or no peer holding state
	// answered (see decideEmptyStart): the operator vouches that this node
	// never acknowledged entries the others may lack.
	ForceEmpty bool
	// Barrier and StepDown, when set, replace raft's Barrier and
	// LeadershipTransfer at the start of a term (tests hold or fail them).
	Barrier  func(timeout time.Duration) error
	StepDown func() error
	// BackupEvery and BackupGrace tune the backup scheduler (zero: the
	// defaults of coordinator/schedule; tests and labs shorten them).
	BackupEvery, BackupGrace time.Duration
	// Drills gives each cluster's last drill for the RTO measurement
	// (nil: "no drill recorded"; compliance.go).
	Drills DrillSource
}

// Server is one coordinator.
type Server struct {
	cfg    *config.Config
	opts   Options
	log    *slog.Logger
	fsm    *fsm.FSM
	tokens *config.Tokens

	raft *raft.Raft
	// raftLogs: the Raft log store (the incidents read when a term began:
	// termStartedAt); nil in tests that build a Server by hand.
	raftLogs raft.LogStore
	// startIndex: the last log index this node held when it started
	// (stateReadable).
	startIndex uint64
	pool       *gossip.Pool
	view       *view
	hub        *hub
	leases     *leases
	// primaryLSN: each cluster's primary's highest LSN seen (primarylsn.go).
	primaryLSN *primaryLSNs
	judge      *judgements
	// comp: recovery targets measured by the leader (compliance.go).
	comp   *complianceState
	syncer *syncer
	conns  *peerConns
	// contacts: which peers this leader's heartbeats reach (membership.go).
	contacts *contacts
	// heartbeats: each cluster's newest write-availability heartbeat
	// seen by this leader (slo.go).
	heartbeats *heartbeats
	// memberWrites rate-limits registration changes per member
	// (register.go): a burst, then one per memberUpdateEvery.
	memberWrites      *memberWrites
	memberUpdateEvery time.Duration

	metrics *metrics
	notify  *notifier // webhook notifications (notify.go)
	// sched: the backup scheduler, run while this node leads
	// (backupsched.go, coordinator/schedule).
	sched *schedule.Runner
	// drills: restore drills ordered by the leader (drill.go).
	drills *drills
	// incidents: the leader's escalation and notification of incidents.
	incidents *incidentRunner
	// runbooks: the leader's execution of runbook runs.
	runbooks *runbookRunner
	// gamedays: the leader's game days and their probes (gameday.go).
	gamedays *gameDayRunner

	mu        sync.Mutex
	leaderCtx context.Context
	leaderEnd context.CancelFunc
	// caughtUp: this term's barrier completed, so the FSM holds every entry
	// committed before the term began (see caughtUpLeader).
	caughtUp bool
	// promoteClk: when this term caught up and sent its promote orders
	// (promote.go).
	promoteClk promoteClock

	// levelMu guards levels: feature levels asked of peers gossip does
	// not know (askLevel).
	levelMu sync.Mutex
	levels  map[string]askedLevel

	// raftStarted: when Raft started (pgdr_coordinator_raft_last_contact_seconds).
	raftStarted time.Time

	// totalsTried: when the leader last tried to start the totals (totals.go).
	totalsMu    sync.Mutex
	totalsTried time.Time
}

// New checks the configuration's files and builds a server; Run starts it.
func New(cfg *config.Config, log *slog.Logger, opts Options) (*Server, error) {
	tokens, err := config.LoadTokens(cfg.Auth.TokensFile)
	if err != nil {
		return nil, err
	}
	cli, err := tlsutil.ClientConfig(cfg.TLS)
	if err != nil {
		return nil, err
	}
	return newServer(cfg, log, opts, tokens, cli)
}

// newServer builds a server from files already read.
func newServer(cfg *config.Config, log *slog.Logger, opts Options, tokens *config.Tokens, cli *tls.Config) (*Server, error) {
	var err error
	s := &Server{
		cfg: cfg, opts: opts, log: log, tokens: tokens,
		fsm:        fsm.New(log.With("component", "fsm"), fsm.Options{}),
		view:       newView(),
		hub:        newHub(),
		leases:     newLeases(),
		judge:      newJudgements(),
		comp:       newComplianceState(),
		heartbeats: newHeartbeats(),
		primaryLSN: newPrimaryLSNs(),
		syncer:     newSyncer(),
		conns:      newPeerConns(cli),
		contacts:   newContacts(),

		memberWrites:      newMemberWrites(),
		memberUpdateEvery: memberUpdateEvery,
	}
	s.comp.drills = opts.Drills
	if s.comp.drills == nil {
		s.comp.drills = fsmDrills{s}
	}
	s.metrics = newMetrics(s)
	grace := opts.BackupGrace
	if grace == 0 {
		grace = schedule.DefaultGrace
	}
	retry := schedule.DefaultRetry
	if opts.BackupEvery > 0 { // labs tick fast: retry within a few ticks
		retry = min(retry, 4*opts.BackupEvery)
	}
	s.sched = schedule.NewRunner(schedule.Config{Server: schedServer{s}, Name: cfg.Name, Log: log,
		Every: opts.BackupEvery, Grace: grace, WarmUp: cfg.Health.StaleAfter.Duration, Retry: retry})
	s.drills = newDrills(s, log)
	s.metrics.reg.MustRegister(s.drills.runs, drillCollector{s})
	if s.notify, err = newNotifier(cfg, log); err != nil {
		return nil, err
	}
	s.metrics.reg.MustRegister(s.notify.deliveries)
	if s.incidents, err = newIncidentRunner(s, cfg.Incidents, log); err != nil {
		return nil, err
	}
	s.runbooks = newRunbookRunner(s, log)
	s.metrics.reg.MustRegister(incidentCollector{s})
	s.gamedays = newGameDayRunner(s, log)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // not leader yet: the leader context starts out done
	s.leaderCtx, s.leaderEnd = ctx, cancel
	return s, nil
}

// Run starts Raft, gossip, the gRPC API and the HTTP endpoint, and serves
// until ctx ends; then it stops them all.
func (s *Server) Run(ctx context.Context) error {
	stop, err := s.startRaft(ctx)
	if err != nil {
		return err
	}
	defer stop()

	if s.cfg.Gossip.Bind != "" {
		s.pool, err = gossip.Start(ctx, gossip.Config{
			Bind: s.cfg.Gossip.Bind, Join: s.cfg.Gossip.Join, KeyFile: s.cfg.Gossip.KeyFile,
			Meta: gossip.Meta{Kind: gossip.KindCoordinator, Name: s.cfg.Name, Region: s.cfg.Region, API: s.cfg.API.Advertise,
				Features: FeatureLevel},
			Profile: s.cfg.Gossip.Profile, Logger: s.log, Tune: s.opts.GossipTune,
		})
		if err != nil {
			return err
		}
		defer s.pool.Close()
	}

	srvTLS, err := tlsutil.ServerConfig(s.cfg.TLS, false)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(srvTLS)),
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4<<20),
		// Fixed flow-control windows (1 MiB, above the 64 KiB start, below
		// the 16 MiB the estimate may grow to) turn off gRPC's bandwidth
		// estimation, which answered nearly every agent report with a ping
		// of its own (a write on the connection per report: 12% of the
		// leader's CPU at 5,000 agents, scripts/bench/coordinator.sh).
		grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(1<<20),
	)
	pgdrv1.RegisterAdminServiceServer(gs, &adminAPI{s: s})
	pgdrv1.RegisterAgentServiceServer(gs, &agentAPI{s: s})
	pgdrv1.RegisterCoordinatorServiceServer(gs, &coordAPI{s: s})
	ln, err := net.Listen("tcp", s.cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api.listen %s: %w", s.cfg.API.Listen, err)
	}
	errc := make(chan error, 3)
	go func() { errc <- gs.Serve(ln) }()
	defer gs.Stop()

	if s.cfg.HTTP.Listen != "" {
		hs := &http.Server{Addr: s.cfg.HTTP.Listen, Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		hln, err := net.Listen("tcp", s.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen %s: %w", s.cfg.HTTP.Listen, err)
		}
		go func() {
			if err := hs.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		defer hs.Close()
	}
	if s.cfg.UI.Listen != "" { // the status page (ui.go)
		stopUI, err := s.startUI(errc)
		if err != nil {
			return err
		}
		defer stopUI()
	}
	s.log.Info("coordinator running", "name", s.cfg.Name, "api", s.cfg.API.Listen, "raft", s.cfg.Raft.Advertise)

	s.notify.run(ctx)
	go s.watchLeadership(ctx)
	select {
	case <-ctx.Done():
		s.log.Info("coordinator stopping")
		s.endLeadership()
		return nil
	case err := <-errc:
		return err
	}
}

func (s *Server) startRaft(ctx context.Context) (func(), error) {
	hl := hclogger(s.log, "raft", s.cfg.LogLevel)
	walDir := filepath.Join(s.cfg.DataDir, "raft-wal")
	// An empty data directory (wiped, or new) is decided on before anything
	// is created in it: a refusal leaves it as it was.
	var plan *startPlan
	fresh, err := noRaftFiles(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if fresh {
		p, err := s.planEmptyStart(ctx)
		if err != nil {
			s.conns.close()
			return nil, err
		}
		plan = &p
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft log: %w", err)
	}
	wal, err := raftwal.Open(walDir)
	if err != nil {
		return nil, fmt.Errorf("raft log in %s: %w", s.cfg.DataDir, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, 3, hl)
	if err != nil {
		wal.Close()
		return nil, fmt.Errorf("raft snapshots: %w", err)
	}
	stream, err := newTLSStream(s.cfg.Raft.Bind, s.cfg.Raft.Advertise, s.cfg.TLS)
	if err != nil {
		wal.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 2 * time.Second, Logger: hl,
	})
	rc := raftConfig(s.cfg, hl)
	if err := raft.ValidateConfig(rc); err != nil {
		trans.Close()
		wal.Close()
		return nil, fmt.Errorf("raft settings: %w", err)
	}
	existing, err := raft.HasExistingState(wal, wal, snaps)
	if err != nil {
		trans.Close()
		wal.Close()
		return nil, fmt.Errorf("raft state: %w", err)
	}
	if !existing && plan == nil {
		// A data directory started before but never given state (a new
		// node restarted before it was added, or a start cut short).
		p, err := s.planEmptyStart(ctx)
		if err != nil {
			trans.Close()
			wal.Close()
			s.conns.close()
			return nil, err
		}
		plan = &p
	}
	switch {
	case existing:
		s.log.Info("raft state found on disk; not bootstrapping", "dir", s.cfg.DataDir)
	case plan.action == startBootstrap:
		var servers []raft.Server
		for _, p := range s.cfg.Bootstrap {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.Name), Address: raft.ServerAddress(p.RaftAddress)})
		}
		if err := raft.BootstrapCluster(rc, wal, wal, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			trans.Close()
			wal.Close()
			return nil, fmt.Errorf("raft bootstrap: %w", err)
		}
		s.log.Info("bootstrapped a new raft cluster", "voters", len(servers))
	case plan.warn != "":
		s.log.Warn(plan.warn, "dir", s.cfg.DataDir)
	default:
		s.log.Info(plan.info, "dir", s.cfg.DataDir)
	}
	r, err := raft.NewRaft(rc, s.fsm, wal, wal, snaps, trans)
	if err != nil {
		trans.Close()
		wal.Close()
		return nil, fmt.Errorf("raft: %w", err)
	}
	s.raft, s.raftLogs = r, wal
	// The log this node holds on disk from before it started: a follower
	// has not caught up before it applied it again (stateReadable).
	s.startIndex = r.LastIndex()
	s.raftStarted = time.Now()
	wctx, wcancel := context.WithCancel(context.Background())
	go s.contacts.watch(wctx, r)
	s.watchLeaderChanges(wctx, r)
	return func() {
		wcancel()
		if err := r.Shutdown().Error(); err != nil {
			s.log.Warn("raft shutdown", "err", err)
		}
		trans.Close()
		wal.Close()
		s.conns.close()
	}, nil
}

// raftConfig is the raft library's configuration from ours.
func raftConfig(cfg *config.Config, hl hclog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Name)
	rc.Logger = hl
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout.Duration
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout.Duration
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLease.Duration
	rc.SnapshotThreshold = cfg.Raft.SnapshotThreshold
	rc.SnapshotInterval = cfg.Raft.SnapshotInterval.Duration
	rc.TrailingLogs = cfg.Raft.TrailingLogs
	return rc
}

func (s *Server) isLeader() bool { return s.raft != nil && s.raft.State() == raft.Leader }

// caughtUpLeader reports whether this node leads and its state machine has
// caught up with the log for this term (its barrier completed). Before
// that, the FSM may lack entries committed by the previous leader (a new
// primary, a new epoch), and anything judged on it, a lease renewal first
// of all, could be wrong.
func (s *Server) caughtUpLeader() bool {
	s.mu.Lock()
	ok := s.caughtUp && s.leaderCtx.Err() == nil
	s.mu.Unlock()
	return ok && s.isLeader()
}

// stateReadable refuses (Unavailable, so that pgdrctl asks the next
// coordinator) a read of the replicated state from a follower that has not
// heard from a Raft leader since it started, or has not yet applied the log
// it held on disk when it started (heartbeats reach it before the entries
// do, so contact alone proves nothing): it applies only what a leader
// told it is committed, so its copy may be empty or far behind (a
// coordinator restarted after an outage answered an empty history). A
// leader that has not caught up refuses too.
func (s *Server) stateReadable() error {
	if s.raft == nil {
		return nil
	}
	if s.isLeader() {
		if !s.caughtUpLeader() {
			return errCatchingUp
		}
		return nil
	}
	if s.raft.LastContact().IsZero() || s.raft.AppliedIndex() < s.startIndex {
		return errNoLeaderYet
	}
	return nil
}

// errNoLeaderYet: see stateReadable.
var errNoLeaderYet = status.Error(codes.Unavailable,
	"this coordinator has not caught up with a Raft leader since it started, so its copy of the state may be behind; ask another coordinator")

// errCatchingUp refuses a request a leader that has not caught up must not
// answer; the caller retries (Unavailable).
var errCatchingUp = status.Error(codes.Unavailable,
	"this coordinator has just become leader and has not caught up with the Raft log yet; retry shortly")

// watchLeadership starts the leader's work when this node wins an
// election and stops it when it loses leadership.
func (s *Server) watchLeadership(ctx context.Context) {
	ch := s.raft.LeaderCh()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-ch:
			if isLeader {
				s.beginLeadership(ctx)
			} else {
				s.endLeadership()
			}
		}
	}
}

func (s *Server) beginLeadership(parent context.Context) {
	s.mu.Lock()
	s.leaderEnd()
	lctx, cancel := context.WithCancel(parent)
	s.leaderCtx, s.leaderEnd = lctx, cancel
	s.caughtUp = false
	s.promoteClk.begin(time.Time{})
	s.mu.Unlock()
	s.view.reset()
	s.hub.sent.reset()
	s.judge.reset()
	s.comp.reset()
	s.syncer.reset()
	s.heartbeats.reset()
	s.log.Info("became raft leader")
	// The state is read after the barrier in leaderLoop; until then every
	// renewal is refused as retryable (caughtUpLeader), so that none is
	// judged on a state that lacks the previous leader's last entries.
	go s.leaderLoop(lctx)
}

func (s *Server) endLeadership() {
	s.mu.Lock()
	s.leaderEnd()
	s.caughtUp = false
	s.promoteClk.begin(time.Time{})
	s.mu.Unlock()
	s.view.reset()
	s.hub.sent.reset()
}

// currentLeaderCtx is done as soon as this node stops leading.
func (s *Server) currentLeaderCtx() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaderCtx
}

// leaderLoop runs while this node leads: it makes sure every voter is in
// the replicated coordinator list, then watches clusters once a tick.
func (s *Server) leaderLoop(ctx context.Context) {
	if !s.catchUp(ctx) {
		return
	}
	s.ensureCoordinators(ctx)
	// The backup scheduler starts once the state is caught up: a run a
	// previous leader left in flight is then seen (and waited for, or
	// recorded as timed out), never run a second time.
	if s.sched != nil { // nil in tests that build a Server by hand
		go s.sched.Run(ctx)
	}
	if s.drills != nil {
		go s.drills.run(ctx)
	}
	go s.sloLoop(ctx)
	go s.slotLoop(ctx)
	if s.incidents != nil {
		go s.incidents.run(ctx)
	}
	if s.runbooks != nil {
		go s.runbooks.run(ctx)
	}
	if s.gamedays != nil && s.runbooks != nil {
		go s.gamedays.run(ctx)
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.recordInitialPrimaries(ctx)
			s.startTotals(ctx, time.Now())
			s.recordPrimaryLSNs(ctx)
			s.failoverTick(ctx)
			s.syncTick(ctx)
			s.complianceTick(ctx)
		}
	}
}

// catchUp runs this term's barrier, so that the FSM has applied every entry
// committed before the term, assumes every recorded primary holds its lease
// for a TTL from now, and then lets renewals in. When the barrier
// fails the node steps down (leadership transfer): a leader that cannot
// commit must not keep agents waiting on it. If even that fails (no other
// voter reachable) it tries the barrier again, renewals still refused, for
// as long as it leads. It reports whether the node caught up.
func (s *Server) catchUp(ctx context.Context) bool {
	barrier, stepDown := s.opts.Barrier, s.opts.StepDown
	if barrier == nil {
		barrier = func(d time.Duration) error { return s.raft.Barrier(d).Error() }
	}
	if stepDown == nil {
		stepDown = func() error { return s.raft.LeadershipTransfer().Error() }
	}
	for {
		err := barrier(applyTimeout)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			// Leases are assumed held on the caught-up state before the
			// first renewal is let in, so that no grant is overwritten.
			now := time.Now()
			s.leases.assumeHeld(s.fsm.State(), now, s.cfg.Failover.LeaseTTL.Duration)
			s.mu.Lock()
			if s.leaderCtx == ctx {
				s.caughtUp = true
				// Settle windows of orders sent by earlier leaders count
				// from now, on this leader's monotonic clock.
				s.promoteClk.begin(now)
			}
			s.mu.Unlock()
			s.log.Info("leader caught up with the raft log; lease renewals accepted")
			return true
		}
		s.log.Warn("leader barrier failed; lease renewals refused, stepping down", "err", err)
		terr := stepDown()
		if terr == nil {
			s.log.Info("leadership transferred after the failed barrier")
			return false
		}
		s.log.Warn("leadership transfer after the failed barrier", "err", terr)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// ensureCoordinators records the leader and the bootstrap peers that are
// raft voters but missing from the replicated coordinator list.
func (s *Server) ensureCoordinators(ctx context.Context) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return
	}
	known := map[string]*pgdrv1.Coordinator{}
	for _, c := range s.fsm.Coordinators() {
		known[c.Name] = c
	}
	boot := map[string]config.Peer{}
	for _, p := range s.cfg.Bootstrap {
		boot[p.Name] = p
	}
	for _, srv := range cf.Configuration().Servers {
		name := string(srv.ID)
		want := &pgdrv1.Coordinator{Name: name, RaftAddress: string(srv.Address)}
		if p, ok := boot[name]; ok {
			want.ApiAddress, want.Region = p.APIAddress, p.Region
		}
		if name == s.cfg.Name {
			want.ApiAddress, want.Region = s.cfg.API.Advertise, s.cfg.Region
		}
		if have, ok := known[name]; ok {
			if name != s.cfg.Name || proto.Equal(have, want) {
				continue
			}
		} else if want.ApiAddress == "" {
			continue // added by `coordinator add`, which records it itself
		}
		if _, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_UPSERT_COORDINATOR,
			&pgdrv1.UpsertCoordinator{Coordinator: want}, "coordinator:"+s.cfg.Name); err != nil {
			s.log.Warn("recording coordinator", "name", name, "err", err)
		}
	}
}

// recordInitialPrimaries records a primary for clusters that have none
// yet, when exactly one fresh member reports being writable. Choosing a
// new primary when one is lost is failover's job, not this.
func (s *Server) recordInitialPrimaries(ctx context.Context) {
	// Only clusters without a primary matter; collect their members
	// without copying the whole state.
	pending := map[string][]string{}
	epochs := map[string]uint64{}
	s.fsm.Read(func(st *pgdrv1.State) {
		for name, c := range st.Clusters {
			if c.Primary == "" {
				for n := range c.Members {
					pending[name] = append(pending[name], n)
				}
				epochs[name] = c.Epoch
			}
		}
	})
	if len(pending) == 0 {
		return
	}
	samples := s.view.snapshot()
	now := time.Now()
	for name, members := range pending {
		var writable []string
		for _, n := range members {
			sm, ok := samples[memberKey{name, n}]
			if ok && now.Sub(sm.at) <= s.cfg.Health.StaleAfter.Duration && sm.report.Connectable && !sm.report.InRecovery && !sm.report.Fenced {
				writable = append(writable, n)
			}
		}
		if len(writable) != 1 {
			continue
		}
		_, err := s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{
			Cluster: name, Name: writable[0], ExpectedEpoch: epochs[name],
			Reason: "initial primary: the only member that is not in recovery",
		}, "coordinator:"+s.cfg.Name)
		if err != nil {
			s.log.Warn("recording the initial primary", "cluster", name, "node", writable[0], "err", err)
		}
	}
}

// leaderInfo returns the leader's name and API address.
func (s *Server) leaderInfo() (name, api string, ok bool) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", "", false
	}
	name = string(id)
	if name == s.cfg.Name {
		return name, s.cfg.API.Advertise, true
	}
	for _, c := range s.fsm.Coordinators() {
		if c.Name == name && c.ApiAddress != "" {
			return name, c.ApiAddress, true
		}
	}
	for _, p := range s.cfg.Bootstrap {
		if p.Name == name && p.APIAddress != "" {
			return name, p.APIAddress, true
		}
	}
	if s.pool != nil {
		for _, m := range s.pool.Members() {
			if m.Meta.Kind == gossip.KindCoordinator && m.Meta.Name == name && m.Meta.API != "" {
				return name, m.Meta.API, true
			}
		}
	}
	return name, "", false
}

// leaderConn returns a connection to the leader, for forwarding.
func (s *Server) leaderConn() (*grpc.ClientConn, error) {
	name, api, ok := s.leaderInfo()
	if !ok {
		if name == "" {
			return nil, outcome.NotSubmitted("no raft leader is elected right now; retry shortly")
		}
		return nil, outcome.NotSubmitted("the leader %s has no known API address", name)
	}
	s.metrics.forwards.Inc()
	conn, err := s.conns.get(api)
	if err != nil {
		return nil, err
	}
	// A call on a ready connection may fail after the request went out;
	// one on a connection that never became ready was not sent.
	if err := waitReady(conn, 2*time.Second); err != nil {
		return nil, outcome.NotSubmitted("the leader %s at %s: %v", name, api, err)
	}
	return conn, nil
}

// propose applies a command through Raft: directly on the leader, or
// forwarded to the leader from a follower. A domain rejection by the FSM
// is returned as FailedPrecondition.
func (s *Server) propose(ctx context.Context, typ pgdrv1.CommandType, payload proto.Message, actor string) (*pgdrv1.ApplyResult, error) {
	cmd, err := fsm.NewCommand(typ, payload, actor, time.Now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding command: %v", err)
	}
	return s.proposeCommand(ctx, cmd)
}

func (s *Server) proposeCommand(ctx context.Context, cmd *pgdrv1.Command) (*pgdrv1.ApplyResult, error) {
	var res *pgdrv1.ApplyResult
	if s.isLeader() {
		r, err := s.applyHere(cmd)
		if err != nil {
			return nil, err
		}
		res = r
	} else {
		conn, err := s.leaderConn()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		r, err := pgdrv1.NewCoordinatorServiceClient(conn).Apply(ctx, &pgdrv1.ApplyRequest{Command: cmd})
		s.metrics.applyDuration.Observe(time.Since(start).Seconds())
		if err != nil {
			return nil, outcome.Forwarded("forwarding to the leader", err)
		}
		res = r
	}
	return s.applied(res)
}

// proposeHere is proposeCommand for a leader's own decisions: applied on
// this node's Raft log only, never forwarded, so that a node that stopped
// leading (and has not noticed yet) cannot have a decision taken on its
// view committed by the next leader. It fails unless this node leads.
func (s *Server) proposeHere(cmd *pgdrv1.Command) (*pgdrv1.ApplyResult, error) {
	if s.raft == nil {
		return nil, status.Error(codes.Unavailable, "no raft")
	}
	res, err := s.applyHere(cmd)
	if err != nil {
		return nil, err
	}
	return s.applied(res)
}

// applyHere applies cmd through this node's Raft (which refuses unless it
// leads) and returns the applier's result.
func (s *Server) applyHere(cmd *pgdrv1.Command) (*pgdrv1.ApplyResult, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding command: %v", err)
	}
	start := time.Now()
	f := s.raft.Apply(data, applyTimeout)
	err = f.Error()
	s.metrics.applyDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		s.metrics.applies.WithLabelValues("error").Inc()
		return nil, raftError("raft apply", err)
	}
	r, ok := f.Response().(*pgdrv1.ApplyResult)
	if !ok {
		return nil, status.Errorf(codes.Internal, "raft apply returned %T", f.Response())
	}
	return r, nil
}

// applied turns an applier's refusal into an error.
func (s *Server) applied(res *pgdrv1.ApplyResult) (*pgdrv1.ApplyResult, error) {
	if !res.Ok {
		s.metrics.applies.WithLabelValues("rejected").Inc()
		return res, status.Error(codes.FailedPrecondition, res.Error)
	}
	s.metrics.applies.WithLabelValues("ok").Inc()
	return res, nil
}

func (s *Server) gossipStates() map[string]string {
	out := map[string]string{}
	if s.pool == nil {
		return out
	}
	for _, m := range s.pool.Members() {
		out[m.Name] = m.State
	}
	return out
}

func (s *Server) clusterStatus(only string) []*pgdrv1.ClusterStatus {
	return s.statusOfClusters(s.fsm.Clusters(), only)
}

// statusOfClusters is clusterStatus of the given clusters.
func (s *Server) statusOfClusters(clusters map[string]*pgdrv1.Cluster, only string) []*pgdrv1.ClusterStatus {
	lsns := make(map[string]uint64, len(clusters))
	for name, c := range clusters {
		lsns[name] = s.primaryLastLSN(c)
	}
	return clusterStatus(statusInput{
		state: &pgdrv1.State{Clusters: clusters}, samples: s.view.snapshot(), gossip: s.gossipStates(),
		now: time.Now(), staleAfter: s.cfg.Health.StaleAfter.Duration, primaryLSN: lsns,
	}, only)
}

// statusOf is the status of cluster c alone (a copy the caller holds):
// unlike clusterStatus it copies neither the other clusters nor their
// members' samples, so that a loop over every cluster (the backup
// scheduler's tick) costs the clusters' size, not its square.
func (s *Server) statusOf(c *pgdrv1.Cluster) []*pgdrv1.ClusterStatus {
	name := c.GetName()
	return clusterStatus(statusInput{
		state: &pgdrv1.State{Clusters: map[string]*pgdrv1.Cluster{name: c}}, samples: s.view.snapshotCluster(name), gossip: s.gossipStates(),
		now: time.Now(), staleAfter: s.cfg.Health.StaleAfter.Duration, primaryLSN: map[string]uint64{name: s.primaryLastLSN(c)},
	}, name)
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		_, leader := s.raft.LeaderWithID()
		stats := s.raft.Stats()
		body := map[string]any{
			"name": s.cfg.Name, "raft_state": s.raft.State().String(), "leader": string(leader),
			"applied_index": s.fsm.LastIndex(), "last_snapshot_index": stats["last_snapshot_index"],
			"commit_index": stats["commit_index"],
		}
		if s.pool != nil {
			joined, err := s.pool.Joined()
			body["gossip_joined"] = joined
			if err != nil {
				body["gossip_error"] = err.Error()
			}
			alive := 0
			for _, m := range s.pool.Members() {
				if m.State == gossip.StateAlive {
					alive++
				}
			}
			body["gossip_alive"] = alive
		}
		w.Header().Set("Content-Type", "application/json")
		if leader == "" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}

// peerConns caches gRPC connections to other coordinators.
type peerConns struct {
	tls   *tls.Config
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerConns(t *tls.Config) *peerConns {
	return &peerConns{tls: t, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerConns) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(p.tls.Clone())))
	if err != nil {
		return nil, outcome.NotSubmitted("dial %s: %v", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}
