package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/orders"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/conninfo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Timings of the coordinator client.
const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 2 * time.Second
	rpcTimeout    = 3 * time.Second
	leaderRecheck = 5 * time.Second
)

// RPCTimeout bounds one call to a coordinator (the lease's renewals and
// the orders' Epoch call use it too).
const RPCTimeout = rpcTimeout

// errLeaderMoved ends a session whose coordinator no longer leads.
var errLeaderMoved = errors.New("the coordinator leader changed")

// Executor carries out the coordinator's orders (agent/orders.Executor):
// ctx is the agent's run context, not the session's, since orders outlive
// the session that brought them.
type Executor interface {
	Order(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) (string, error)
	// TakeDivergence returns the divergence report a rejoin order made
	// (nil: none), sent with the order's result.
	TakeDivergence(id string) *pgdrv1.DivergenceSummary
}

// Commands carries out RunCommand orders: started once per key, reported
// on (pending) by every repeat (agent/runcmd.Runner).
type Commands interface {
	Order(ctx context.Context, received time.Time, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult
}

// Backups carries out the scheduler's backup runs (agent/backuprun.Runner):
// it answers at once (pending, a repeated run's state, or a refusal) and
// completes the run later through Session.Complete, so that a backup never
// holds up the orders behind it.
type Backups interface {
	StartAt(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult
}

// Monitor is the local health loop (agent/monitor.Monitor): the latest
// report, a round of checks at once, the signal of a newer report, and the
// note of a command's receipt that the next reports echo.
type Monitor interface {
	Latest() *pgdrv1.HealthReport
	CheckNow(ctx context.Context) *pgdrv1.HealthReport
	Reported() <-chan struct{}
	Received(id string, at time.Time)
}

// Epoch is the highest epoch seen (agent/epoch.Tracker): See(0) reads it.
type Epoch interface {
	See(e uint64) uint64
}

// LeaderClock is the measurement of the leader's clock
// (agent/leaderclock.Clock).
type LeaderClock interface {
	Forget()
	Note(sent, back, leaderNow time.Time, how string)
	NoteSkew(skew time.Duration, how string)
}

// Failsafe is the failsafe's public key, registered with the member.
type Failsafe interface {
	PublicKey() []byte
}

// Watchdog says whether a process watchdog covers this process's death:
// only then is Promote.settle_by kept (the member's honours_settle_by).
type Watchdog interface {
	Enabled() bool
}

// Deps is what the session needs from the rest of the agent.
type Deps struct {
	Executor Executor
	Backups  Backups // nil: Backup orders are refused
	// Drills carries out restore drills (agent/drillrun.Runner), as
	// Backups does backups; nil: Drill orders are refused.
	Drills Backups
	// Commands carries out RunCommand orders (agent/runcmd.Runner); nil:
	// refused.
	Commands    Commands
	Monitor     Monitor
	Epoch       Epoch
	LeaderClock LeaderClock
	Failsafe    Failsafe
	Watchdog    Watchdog
	// Clock is the agent's clock for the orders' receipts (time.Now, or
	// the tests'); nil: time.Now.
	Clock func() time.Time
	// Connected is pgdr_agent_coordinator_connected; nil: none.
	Connected prometheus.Gauge
	Log       *slog.Logger
}

// Session keeps the agent registered with the coordinator leader, streams
// its reports and hands its commands on (Run).
type Session struct {
	cfg  *config.Config
	deps Deps
	log  *slog.Logger
	next int // the address asked first in the next search for the leader (Run's alone)

	// mu guards cli: the session's client while a session with the
	// leader is up.
	mu  sync.Mutex
	cli pgdrv1.AgentServiceClient
}

// New builds the session of cfg's node with its coordinator.* settings.
func New(cfg *config.Config, deps Deps) *Session {
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Session{cfg: cfg, deps: deps, log: deps.Log.With("component", "coordinator-client")}
}

func (s *Session) clock() time.Time {
	if s.deps.Clock != nil {
		return s.deps.Clock()
	}
	return time.Now()
}

func (s *Session) connected(v float64) {
	if s.deps.Connected != nil {
		s.deps.Connected.Set(v)
	}
}

// Client is the session's client while a session with the leader is up,
// else nil.
func (s *Session) Client() pgdrv1.AgentServiceClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cli
}

// setClient publishes (or, with nil, withdraws) the session's client.
func (s *Session) setClient(cli pgdrv1.AgentServiceClient) {
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
}

// ErrNoSession is Complete's error while no session with the leader is up.
var ErrNoSession = errors.New("no session with the coordinator leader")

// Complete sends the result of a command whose outcome is known only
// after its order was answered (a run that outlives its order) through
// the session that is up now, which may be with another leader than the
// one that sent the command. The caller retries on an error.
func (s *Session) Complete(ctx context.Context, res *pgdrv1.CommandResult) error {
	cli := s.Client()
	if cli == nil {
		return ErrNoSession
	}
	if res.Cluster == "" {
		res.Cluster = s.cfg.Cluster
	}
	if res.Node == "" {
		res.Node = s.cfg.Node.Name
	}
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := cli.CompleteCommand(cctx, res); err != nil {
		return fmt.Errorf("completing command %s: %w", res.GetId(), err)
	}
	return nil
}

// Run keeps a session with the leader until ctx ends, reconnecting with
// backoff and asking again who leads. ctx is also the context the orders
// are carried out in: they outlive the session that brought them.
func (s *Session) Run(ctx context.Context) {
	backoff := backoffMin
	for ctx.Err() == nil {
		started := time.Now()
		err := s.session(ctx)
		s.connected(0)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			backoff = backoffMin
		}
		if status.Code(err) == codes.FailedPrecondition || errors.Is(err, errLeaderMoved) {
			s.log.Info("coordinator is not the leader; asking again", "err", err)
		} else {
			s.log.Warn("coordinator session ended", "err", err, "retry_in", backoff)
		}
		// Jitter spreads thousands of agents reconnecting after a leader
		// change, so the new leader is not hit by them all at once.
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// findLeader asks the configured coordinators in turn who leads.
func (s *Session) findLeader(ctx context.Context, opts []grpc.DialOption) (*pgdrv1.LeaderResponse, error) {
	addrs := s.cfg.Coordinator.Addresses
	n := len(addrs)
	var errs []error
	for i := 0; i < n; i++ {
		idx := (s.next + i) % n
		addr := addrs[idx]
		resp, err := askLeader(ctx, addr, opts)
		if err == nil && resp.GetKnown() && resp.GetApiAddress() != "" {
			s.next = idx
			return resp, nil
		}
		if err == nil {
			err = errors.New("no leader elected yet")
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	s.next = (s.next + 1) % n
	return nil, fmt.Errorf("no coordinator named a leader: %w", errors.Join(errs...))
}

// member is this node as the coordinators record it.
func (s *Session) member() *pgdrv1.Member {
	cfg := s.cfg
	m := &pgdrv1.Member{
		Name:          cfg.Node.Name,
		Cluster:       cfg.Cluster,
		Region:        cfg.Node.Region,
		Dsn:           conninfo.WithoutPassword(cfg.Node.AdvertiseDSN),
		GossipAddress: cfg.Gossip.Bind,
		Tags:          cfg.Node.Tags,
		Priority:      int32(cfg.Node.Priority),
	}
	m.ApiUrl = APIURL(cfg)
	m.FailsafeKey = s.deps.Failsafe.PublicKey()
	// Promote.settle_by is kept with a watchdog that covers this process's
	// death (agent/watchdog's promotion guard); without one the leader
	// must not rely on it.
	m.HonoursSettleBy = s.deps.Watchdog.Enabled()
	// A synchronous WAL receiver may be named in the managed
	// synchronous_standby_names (agent/walrecv).
	if rc := cfg.WAL.Receive; rc.Enabled && rc.Synchronous {
		m.SyncReceiver = config.ReceiveAppName(cfg.Node.Name)
	}
	if r := s.deps.Monitor.Latest(); r != nil {
		m.SystemIdentifier = r.SystemIdentifier
	}
	return m
}

func (s *Session) seeEpoch(e uint64) uint64 { return s.deps.Epoch.See(e) }

// session is one connection to the leader: register, then stream reports
// and take commands until something fails or leadership moves. runCtx is
// the orders' context.
func (s *Session) session(runCtx context.Context) error {
	ctx := runCtx
	opts, err := dialOptions(s.cfg.Coordinator)
	if err != nil {
		return err
	}
	leader, err := s.findLeader(ctx, opts)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(leaderDialAddress(s.cfg, leader), opts...)
	if err != nil {
		return fmt.Errorf("dialing the leader %s at %s: %w", leader.GetName(), leader.GetApiAddress(), err)
	}
	defer conn.Close()
	cli := pgdrv1.NewAgentServiceClient(conn)
	mon := s.deps.Monitor
	lclock := s.deps.LeaderClock

	// Register with the system identifier when PostgreSQL is up: wait
	// (briefly) for the first health round rather than register twice.
	if mon.Latest() == nil {
		wctx, wcancel := context.WithTimeout(ctx, rpcTimeout)
		mon.CheckNow(wctx)
		wcancel()
	}
	member := s.member()
	lclock.Forget() // measured afresh with this leader
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	sent := s.clock()
	reg, err := cli.Register(rctx, &pgdrv1.RegisterRequest{Member: member})
	back := s.clock()
	cancel()
	if err != nil {
		return fmt.Errorf("register with %s: %w", leader.GetName(), err)
	}
	if n := reg.GetNow(); n != nil {
		lclock.Note(sent, back, n.AsTime(), "registration with "+leader.GetName())
	}
	s.seeEpoch(reg.GetEpoch())
	registeredSysid := member.SystemIdentifier
	s.log.Info("registered with the coordinator leader", "leader", leader.GetName(), "address", leader.GetApiAddress(),
		"epoch", reg.GetEpoch(), "primary", reg.GetPrimary())

	g, gctx := errgroup.WithContext(ctx)
	reports, err := cli.Report(gctx)
	if err != nil {
		return fmt.Errorf("opening the report stream: %w", err)
	}
	cmds, err := cli.Commands(gctx, &pgdrv1.CommandsRequest{Cluster: s.cfg.Cluster, Node: s.cfg.Node.Name})
	if err != nil {
		return fmt.Errorf("opening the command stream: %w", err)
	}
	s.connected(1)
	s.setClient(cli)
	defer s.setClient(nil)

	g.Go(func() error { // reports
		var sent *pgdrv1.HealthReport
		for {
			if r := mon.Latest(); r != nil && r != sent {
				if r.SystemIdentifier != 0 && r.SystemIdentifier != registeredSysid {
					m := s.member()
					rctx, cancel := context.WithTimeout(gctx, rpcTimeout)
					_, err := cli.Register(rctx, &pgdrv1.RegisterRequest{Member: m})
					cancel()
					if err != nil {
						return fmt.Errorf("register (system identifier %d): %w", m.SystemIdentifier, err)
					}
					registeredSysid = m.SystemIdentifier
				}
				out := proto.Clone(r).(*pgdrv1.HealthReport)
				out.Epoch = s.seeEpoch(0)
				if err := reports.Send(out); err != nil {
					if errors.Is(err, io.EOF) {
						_, err = reports.CloseAndRecv()
					}
					return fmt.Errorf("report stream: %w", err)
				}
				sent = r
			}
			select {
			case <-gctx.Done():
				return gctx.Err()
			case <-mon.Reported():
			}
		}
	})
	// Orders are stamped with the agent's clock as they arrive, not when
	// their turn comes behind a long order: an order's budget counts from
	// its receipt (agent/orders' orderDeadline). When the queue is full the
	// receiver waits and the orders behind are stamped late; that only
	// shortens their budgets (the time since sent_at, on the leader's
	// clock, is taken off: orderDeadline), never lengthens them.
	queue := make(chan receivedCommand, commandQueue)
	g.Go(func() error { // commands: receive
		for {
			cmd, err := cmds.Recv()
			if err != nil {
				return fmt.Errorf("command stream: %w", err)
			}
			// Reports sampled from now on name it (at receipt, not once
			// carried out: agent/monitor's echo).
			at := s.clock()
			mon.Received(cmd.GetId(), at)
			select {
			case queue <- receivedCommand{cmd: cmd, at: at}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	})
	g.Go(func() error { // commands: carry out, one at a time
		for {
			var rc receivedCommand
			select {
			case rc = <-queue:
			case <-gctx.Done():
				return gctx.Err()
			}
			res := s.carryOut(gctx, runCtx, rc.cmd, rc.at)
			cctx, cancel := context.WithTimeout(gctx, rpcTimeout)
			_, err := cli.CompleteCommand(cctx, res)
			cancel()
			if err != nil {
				return fmt.Errorf("completing command %s: %w", rc.cmd.GetId(), err)
			}
		}
	})
	g.Go(func() error { // is it still the leader?
		t := time.NewTicker(leaderRecheck)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return gctx.Err()
			case <-t.C:
			}
			lctx, cancel := context.WithTimeout(gctx, rpcTimeout)
			sent := s.clock()
			resp, err := cli.Leader(lctx, &pgdrv1.LeaderRequest{})
			back := s.clock()
			cancel()
			if err != nil {
				return fmt.Errorf("leader %s does not answer: %w", leader.GetName(), err)
			}
			if !resp.GetKnown() || resp.GetName() != leader.GetName() {
				return fmt.Errorf("%w: %s now names %q", errLeaderMoved, leader.GetName(), resp.GetName())
			}
			// The orders' transit times are measured with the leader's
			// clock (orderDeadline): measured again every leaderRecheck.
			if n := resp.GetNow(); n != nil {
				lclock.Note(sent, back, n.AsTime(), "leader check")
			}
		}
	})
	return g.Wait()
}

// receivedCommand is an order and when it arrived, on the agent's clock.
type receivedCommand struct {
	cmd *pgdrv1.AgentCommand
	at  time.Time
}

// commandQueue bounds the orders received and not yet carried out (the
// leader queues at most 16 per member; a full queue only delays stamping,
// which the transit correction counts against the orders' budgets).
const commandQueue = 64

// CarryOut hands one command, received at received on the agent's clock,
// on as a session does and returns its result (without sending it); ctx
// is the run context the orders are carried out in. Tests call it.
func (s *Session) CarryOut(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult {
	return s.carryOut(ctx, ctx, cmd, received)
}

// carryOut runs one command received at received (the agent's clock,
// when the order arrived on the stream): ctx is the session's, runCtx the
// orders'. Orders older than the known epoch are refused; epoch 0 is
// accepted only for the read-only commands. A read-only command's epoch is
// adopted here, an order's by the Executor once accepted.
func (s *Session) carryOut(ctx, runCtx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult {
	res := &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: s.cfg.Cluster, Node: s.cfg.Node.Name}
	log := s.log.With("command", cmd.GetId(), "epoch", cmd.GetEpoch())
	if sa := cmd.GetSentAt(); sa != nil {
		s.deps.LeaderClock.NoteSkew(received.Sub(sa.AsTime()), "order "+cmd.GetId()+" (with its transit time)")
	}
	if known := s.seeEpoch(0); cmd.GetEpoch() != 0 && cmd.GetEpoch() < known {
		res.Error = fmt.Sprintf("stale epoch %d: this agent knows epoch %d", cmd.GetEpoch(), known)
		log.Warn("refused a command", "err", res.Error)
		return res
	}
	// An order's epoch is adopted by the Executor once it is accepted (an
	// expired order must not move the epoch: the next order at the
	// recorded epoch would be refused as stale).
	switch k := cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Ping:
		s.seeEpoch(cmd.GetEpoch())
		res.Ok, res.Output = true, "pong"
	case *pgdrv1.AgentCommand_CheckNow:
		s.seeEpoch(cmd.GetEpoch())
		r := s.deps.Monitor.CheckNow(ctx)
		b := health.BodyOf(r)
		res.Ok = true
		res.Output = fmt.Sprintf("role=%s healthy=%t timeline=%d lsn=%s lag_bytes=%d", b.Role, b.Healthy, b.Timeline, b.LSN, b.LagBytes)
	case *pgdrv1.AgentCommand_Promote, *pgdrv1.AgentCommand_Follow, *pgdrv1.AgentCommand_Fence, *pgdrv1.AgentCommand_Rejoin,
		*pgdrv1.AgentCommand_Demote, *pgdrv1.AgentCommand_SetSynchronous, *pgdrv1.AgentCommand_Restart, *pgdrv1.AgentCommand_DropSlot:
		out, err := s.deps.Executor.Order(runCtx, cmd, received)
		res.Output = out
		res.Divergence = s.deps.Executor.TakeDivergence(cmd.GetId())
		switch {
		case errors.Is(err, orders.ErrPromotionPending):
			res.Error, res.Pending = err.Error(), true
			log.Warn("order pending", "order", orders.Name(cmd), "err", err)
		case err != nil:
			res.Error = err.Error()
			log.Error("order failed", "order", orders.Name(cmd), "err", err)
		default:
			res.Ok = true
			log.Info("order carried out", "order", orders.Name(cmd), "output", out)
		}
	case *pgdrv1.AgentCommand_Backup:
		if s.deps.Backups == nil {
			res.Error = "this agent does not carry out backup runs"
			break
		}
		res = s.deps.Backups.StartAt(runCtx, cmd, received)
		log.Info("backup run ordered", "run", k.Backup.GetRunId(), "tier", k.Backup.GetTier(), "pending", res.GetPending(), "error", res.GetError())
	case *pgdrv1.AgentCommand_Drill:
		if s.deps.Drills == nil {
			res.Error = "this agent does not carry out restore drills"
			break
		}
		res = s.deps.Drills.StartAt(runCtx, cmd, received)
		log.Info("restore drill ordered", "run", k.Drill.GetRunId(), "pending", res.GetPending(), "error", res.GetError())
	case *pgdrv1.AgentCommand_RunCommand:
		if s.deps.Commands == nil {
			res.Error = "this agent does not run commands"
			break
		}
		res = s.deps.Commands.Order(runCtx, received, cmd)
		res.Id, res.Cluster, res.Node = cmd.GetId(), s.cfg.Cluster, s.cfg.Node.Name
		log.Info("runbook command ordered", "command", k.RunCommand.GetName(), "key", k.RunCommand.GetKey(), "pending", res.GetPending(), "ok", res.GetOk(), "error", res.GetError())
	default:
		res.Error = fmt.Sprintf("unknown command %T", k)
	}
	log.Debug("command done", "ok", res.Ok, "error", res.Error)
	return res
}
