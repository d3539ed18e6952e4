package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Timings of the coordinator client.
const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 2 * time.Second
	rpcTimeout    = 3 * time.Second
	leaderRecheck = 5 * time.Second
)

// errLeaderMoved ends a session whose coordinator no longer leads.
var errLeaderMoved = errors.New("the coordinator leader changed")

// bearer sends the agent's token with every call. It refuses to travel
// over a connection without TLS.
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// coordClient keeps the agent registered with the coordinator leader,
// streams its reports and carries out its commands.
type coordClient struct {
	d    *Daemon
	log  *slog.Logger
	cfg  config.Coordinator
	next int // the address asked first in the next search for the leader
}

// runCoordinator keeps a session with the leader until ctx ends,
// reconnecting with backoff and asking again who leads.
func (d *Daemon) runCoordinator(ctx context.Context) {
	c := &coordClient{d: d, log: d.log.With("component", "coordinator-client"), cfg: d.cfg.Coordinator}
	backoff := backoffMin
	for ctx.Err() == nil {
		started := time.Now()
		err := c.session(ctx)
		d.metrics.coordinator.Set(0)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			backoff = backoffMin
		}
		if status.Code(err) == codes.FailedPrecondition || errors.Is(err, errLeaderMoved) {
			c.log.Info("coordinator is not the leader; asking again", "err", err)
		} else {
			c.log.Warn("coordinator session ended", "err", err, "retry_in", backoff)
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

// dialOptions loads TLS material and the token afresh for every session,
// so rotated files are picked up without a restart.
func (c *coordClient) dialOptions() ([]grpc.DialOption, error) { return dialOptions(c.cfg) }

func dialOptions(cfg config.Coordinator) ([]grpc.DialOption, error) {
	tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: cfg.CAFile, Cert: cfg.CertFile, Key: cfg.KeyFile})
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if cfg.TokenFile != "" {
		tok, err := config.ReadSecretFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("coordinator.token_file: %w", err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: tok}))
	}
	return opts, nil
}

// findLeader asks the configured coordinators in turn who leads.
func (c *coordClient) findLeader(ctx context.Context, opts []grpc.DialOption) (*pgdrv1.LeaderResponse, error) {
	n := len(c.cfg.Addresses)
	var errs []error
	for i := 0; i < n; i++ {
		idx := (c.next + i) % n
		addr := c.cfg.Addresses[idx]
		resp, err := askLeader(ctx, addr, opts)
		if err == nil && resp.GetKnown() && resp.GetApiAddress() != "" {
			c.next = idx
			return resp, nil
		}
		if err == nil {
			err = errors.New("no leader elected yet")
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	c.next = (c.next + 1) % n
	return nil, fmt.Errorf("no coordinator named a leader: %w", errors.Join(errs...))
}

func askLeader(ctx context.Context, addr string, opts []grpc.DialOption) (*pgdrv1.LeaderResponse, error) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	return pgdrv1.NewAgentServiceClient(conn).Leader(ctx, &pgdrv1.LeaderRequest{})
}

// member is this node as the coordinators record it.
func (c *coordClient) member() *pgdrv1.Member {
	cfg := c.d.cfg
	m := &pgdrv1.Member{
		Name:          cfg.Node.Name,
		Cluster:       cfg.Cluster,
		Region:        cfg.Node.Region,
		Dsn:           withoutPassword(cfg.Node.AdvertiseDSN),
		GossipAddress: cfg.Gossip.Bind,
		Tags:          cfg.Node.Tags,
		Priority:      int32(cfg.Node.Priority),
	}
	m.ApiUrl = c.d.apiURL()
	m.FailsafeKey = c.d.failsafe.PublicKey()
	// Promote.settle_by is kept with a watchdog that covers this process's
	// death (promoteguard.go); without one the leader must not rely on it.
	m.HonoursSettleBy = c.d.watchdogEnabled()
	if r := c.d.Latest(); r != nil {
		m.SystemIdentifier = r.SystemIdentifier
	}
	return m
}

func (c *coordClient) seeEpoch(e uint64) uint64 { return c.d.epoch.See(e) }

// setSession publishes (or, with nil, withdraws) the session's client.
func (d *Daemon) setSession(cli pgdrv1.AgentServiceClient) {
	d.sessMu.Lock()
	d.sessCli = cli
	d.sessMu.Unlock()
}

func (d *Daemon) session() pgdrv1.AgentServiceClient {
	d.sessMu.Lock()
	defer d.sessMu.Unlock()
	return d.sessCli
}

// session is one connection to the leader: register, then stream reports
// and take commands until something fails or leadership moves.
func (c *coordClient) session(ctx context.Context) error {
	opts, err := c.dialOptions()
	if err != nil {
		return err
	}
	leader, err := c.findLeader(ctx, opts)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(c.d.leaderDialAddress(leader), opts...)
	if err != nil {
		return fmt.Errorf("dialing the leader %s at %s: %w", leader.GetName(), leader.GetApiAddress(), err)
	}
	defer conn.Close()
	cli := pgdrv1.NewAgentServiceClient(conn)

	// Register with the system identifier when PostgreSQL is up: wait
	// (briefly) for the first health round rather than register twice.
	if c.d.Latest() == nil && c.d.checker != nil {
		wctx, wcancel := context.WithTimeout(ctx, rpcTimeout)
		c.d.CheckNow(wctx)
		wcancel()
	}
	member := c.member()
	c.d.lclock.Forget() // measured afresh with this leader
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	sent := c.d.clock()
	reg, err := cli.Register(rctx, &pgdrv1.RegisterRequest{Member: member})
	back := c.d.clock()
	cancel()
	if err != nil {
		return fmt.Errorf("register with %s: %w", leader.GetName(), err)
	}
	if n := reg.GetNow(); n != nil {
		c.d.lclock.Note(sent, back, n.AsTime(), "registration with "+leader.GetName())
	}
	c.seeEpoch(reg.GetEpoch())
	registeredSysid := member.SystemIdentifier
	c.log.Info("registered with the coordinator leader", "leader", leader.GetName(), "address", leader.GetApiAddress(),
		"epoch", reg.GetEpoch(), "primary", reg.GetPrimary())

	g, gctx := errgroup.WithContext(ctx)
	reports, err := cli.Report(gctx)
	if err != nil {
		return fmt.Errorf("opening the report stream: %w", err)
	}
	cmds, err := cli.Commands(gctx, &pgdrv1.CommandsRequest{Cluster: c.d.cfg.Cluster, Node: c.d.cfg.Node.Name})
	if err != nil {
		return fmt.Errorf("opening the command stream: %w", err)
	}
	c.d.metrics.coordinator.Set(1)
	c.d.setSession(cli)
	defer c.d.setSession(nil)

	g.Go(func() error { // reports
		var sent *pgdrv1.HealthReport
		for {
			if r := c.d.Latest(); r != nil && r != sent {
				if r.SystemIdentifier != 0 && r.SystemIdentifier != registeredSysid {
					m := c.member()
					rctx, cancel := context.WithTimeout(gctx, rpcTimeout)
					_, err := cli.Register(rctx, &pgdrv1.RegisterRequest{Member: m})
					cancel()
					if err != nil {
						return fmt.Errorf("register (system identifier %d): %w", m.SystemIdentifier, err)
					}
					registeredSysid = m.SystemIdentifier
				}
				out := proto.Clone(r).(*pgdrv1.HealthReport)
				out.Epoch = c.seeEpoch(0)
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
			case <-c.d.monitor.Reported():
			}
		}
	})
	// Orders are stamped with the agent's clock as they arrive, not when
	// their turn comes behind a long order: an order's budget counts from
	// its receipt (orderDeadline). When the queue is full the receiver
	// waits and the orders behind are stamped late; that only shortens
	// their budgets (the time since sent_at, on the leader's clock, is
	// taken off: orderDeadline), never lengthens them.
	queue := make(chan receivedCommand, commandQueue)
	g.Go(func() error { // commands: receive
		for {
			cmd, err := cmds.Recv()
			if err != nil {
				return fmt.Errorf("command stream: %w", err)
			}
			// Reports sampled from now on name it (at receipt, not once
			// carried out: echo.go).
			at := c.d.clock()
			c.d.monitor.Received(cmd.GetId(), at)
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
			res := c.carryOutAt(gctx, rc.cmd, rc.at)
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
			sent := c.d.clock()
			resp, err := cli.Leader(lctx, &pgdrv1.LeaderRequest{})
			back := c.d.clock()
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
				c.d.lclock.Note(sent, back, n.AsTime(), "leader check")
			}
		}
	})
	return g.Wait()
}

// carryOut runs one command. Orders older than the known epoch are
// refused; epoch 0 is accepted only for the read-only orders. A read-only
// command's epoch is adopted here, an order's by Order once accepted.
func (c *coordClient) carryOut(ctx context.Context, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
	return c.carryOutAt(ctx, cmd, c.d.clock())
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

// carryOutAt is carryOut for an order received at received (the agent's
// clock, when the order arrived on the stream).
func (c *coordClient) carryOutAt(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult {
	res := &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: c.d.cfg.Cluster, Node: c.d.cfg.Node.Name}
	log := c.log.With("command", cmd.GetId(), "epoch", cmd.GetEpoch())
	if s := cmd.GetSentAt(); s != nil {
		c.d.lclock.NoteSkew(received.Sub(s.AsTime()), "order "+cmd.GetId()+" (with its transit time)")
	}
	if known := c.seeEpoch(0); cmd.GetEpoch() != 0 && cmd.GetEpoch() < known {
		res.Error = fmt.Sprintf("stale epoch %d: this agent knows epoch %d", cmd.GetEpoch(), known)
		log.Warn("refused a command", "err", res.Error)
		return res
	}
	// An order's epoch is adopted by Order once it is accepted (an expired
	// order must not move the epoch: the next order at the recorded epoch
	// would be refused as stale).
	switch k := cmd.GetKind().(type) {
	case *pgdrv1.AgentCommand_Ping:
		c.seeEpoch(cmd.GetEpoch())
		res.Ok, res.Output = true, "pong"
	case *pgdrv1.AgentCommand_CheckNow:
		c.seeEpoch(cmd.GetEpoch())
		r := c.d.CheckNow(ctx)
		b := health.BodyOf(r)
		res.Ok = true
		res.Output = fmt.Sprintf("role=%s healthy=%t timeline=%d lsn=%s lag_bytes=%d", b.Role, b.Healthy, b.Timeline, b.LSN, b.LagBytes)
	case *pgdrv1.AgentCommand_Promote, *pgdrv1.AgentCommand_Follow, *pgdrv1.AgentCommand_Fence, *pgdrv1.AgentCommand_Rejoin,
		*pgdrv1.AgentCommand_Demote, *pgdrv1.AgentCommand_SetSynchronous, *pgdrv1.AgentCommand_Restart:
		out, err := c.d.Order(cmd, received)
		res.Output = out
		switch {
		case errors.Is(err, errPromotionPending):
			res.Error, res.Pending = err.Error(), true
			log.Warn("order pending", "order", orderName(cmd), "err", err)
		case err != nil:
			res.Error = err.Error()
			log.Error("order failed", "order", orderName(cmd), "err", err)
		default:
			res.Ok = true
			log.Info("order carried out", "order", orderName(cmd), "output", out)
		}
	default:
		res.Error = fmt.Sprintf("unknown command %T", k)
	}
	log.Debug("command done", "ok", res.Ok, "error", res.Error)
	return res
}
