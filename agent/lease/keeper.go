package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/pgdr/pgdr/agent/health"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Config is the lease's part of the agent's configuration.
type Config struct {
	Cluster, Node string
	// PGData is the server's data directory (standby.signal, the fenced
	// marker).
	PGData string
	// TTL, SafetyMargin and Loop are failover.lease_ttl, safety_margin
	// and loop (TTLOf, SafetyMarginOf and LoopOf give their defaults).
	TTL, SafetyMargin, Loop time.Duration
	// RPCTimeout bounds one renewal (never past the lease deadline).
	RPCTimeout time.Duration
}

// LoopOf, TTLOf and SafetyMarginOf are the failover.* settings, or their
// defaults when the configuration was not loaded through config.Parse
// (zero or less).
func LoopOf(configured time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return time.Second
}

func TTLOf(configured time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return 5 * time.Second
}

func SafetyMarginOf(configured time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return time.Second
}

// Failsafe is the failsafe (agent/failsafe) as the lease loop consults
// it: it may carry a primary past its lease deadline while every member
// acknowledges, and it learns of every answer the leader gives.
type Failsafe interface {
	// Deadline is when to fence, given the lease's deadline.
	Deadline(leaseDeadline time.Time) time.Time
	// ExpiredReason says why the failsafe deadline passed ("" when it
	// did not carry the primary).
	ExpiredReason() string
	// Granted notes a granted renewal sent at sent.
	Granted(sent time.Time, resp *pgdrv1.RenewLeaseResponse)
	// Refused notes a refusal from a reachable leader.
	Refused()
	// Reset: the node is positively not a primary.
	Reset()
}

// Epoch is the highest epoch the agent has seen (agent/epoch.Tracker).
type Epoch interface {
	See(e uint64) uint64
	Current() uint64
}

// PG stops the local PostgreSQL (agent/pgctl.Controller): fast shutdown.
type PG interface {
	Stop(ctx context.Context) error
}

// Deps is what the lease loop and fencing need from the rest of the agent.
type Deps struct {
	// Session is the coordinator session's client while a session with
	// the leader is up, else nil: renewals go through it when it is up.
	Session func() pgdrv1.AgentServiceClient
	// DialLeader finds the coordinator leader (asking the configured
	// coordinators) and connects to it, for renewals while no session is
	// up; the loop closes the connection when a renewal through it fails.
	DialLeader func(ctx context.Context) (*grpc.ClientConn, error)
	// Report is the latest health report (nil before the first round);
	// CheckNow runs a round at once and publishes it (after fencing).
	Report   func() *pgdrv1.HealthReport
	CheckNow func(ctx context.Context) *pgdrv1.HealthReport
	Epoch    Epoch
	PG       PG
	Failsafe Failsafe
	// Beat tells the process watchdog the deadline the loop guards (zero:
	// nothing to guard); nil: no watchdog.
	Beat func(deadline time.Time)
	// FencedGauge is pgdr_agent_fenced; nil: none.
	FencedGauge prometheus.Gauge
	// RenewalFailures is pgdr_agent_lease_renewal_failures_total: renewals
	// that failed or were refused; nil: none.
	RenewalFailures prometheus.Counter
	Log             *slog.Logger
}

// Keeper renews the primary lease through the coordinator leader and
// fences the local PostgreSQL when it is lost. It holds the lease
// (embedding its Holder, which the failsafe reads).
type Keeper struct {
	*Holder
	cfg  Config
	deps Deps
	// fenceMu serializes fencing.
	fenceMu sync.Mutex
	// kick asks Run for a round now (Kick).
	kick chan struct{}
}

// New builds the keeper of the lease held by h (the Holder the failsafe
// was given: NewHolder(nil) without coordinators).
func New(cfg Config, h *Holder, deps Deps) *Keeper {
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = 3 * time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{Holder: h, cfg: cfg, deps: deps, kick: make(chan struct{}, 1)}
}

// Start builds the lease of a node that may be primary from start: with
// no grant it fences at start + ttl - margin. A fenced marker left in
// pgdata (by an earlier fence) keeps it fenced.
func Start(start time.Time, cfg Config) *Lease {
	l := NewLease(start, cfg.TTL, cfg.SafetyMargin)
	if fi, err := health.ReadFenced(cfg.PGData); fi != nil {
		l.Fence(fmt.Sprintf("%s (marker %s, epoch %d, err %v)", fi.Reason, health.FencedPath(cfg.PGData), fi.Epoch, err))
	}
	return l
}

// Run renews the primary lease every failover.loop while the local
// server is (or may be) a writable primary, and fences it when the lease
// is lost: at the deadline, or at once when the leader names another
// primary or a newer epoch. It runs only with a lease held.
func (k *Keeper) Run(ctx context.Context) {
	log := k.deps.Log.With("component", "lease")
	lc := &leaseConn{session: k.deps.Session, dial: k.deps.DialLeader}
	defer lc.close()
	t := time.NewTicker(k.cfg.Loop)
	defer t.Stop()
	var lastErr string
	var lastErrAt time.Time
	for {
		wait := k.round(ctx, lc, func(err error) {
			if s := err.Error(); s != lastErr || time.Since(lastErrAt) > 10*time.Second {
				log.Warn("renewing the primary lease failed", "err", err)
				lastErr, lastErrAt = s, time.Now()
			}
		})
		if wait <= 0 && ctx.Err() == nil {
			k.beat(time.Time{}) // nothing to guard
		}
		var deadline <-chan time.Time
		var tm *time.Timer
		if wait > 0 {
			tm = time.NewTimer(wait)
			deadline = tm.C
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-deadline:
		case <-k.kick:
		}
		if tm != nil {
			tm.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// round does one round and returns how long until the deadline (0: no
// deadline to watch).
func (k *Keeper) round(ctx context.Context, lc *leaseConn, warn func(error)) time.Duration {
	r := k.deps.Report()
	pgdata := k.cfg.PGData
	_, sigErr := os.Stat(filepath.Join(pgdata, "standby.signal"))
	fenced := k.Fenced() != "" || (r != nil && r.Fenced)
	role := classify(r, fenced, sigErr == nil)
	switch role {
	case roleWait, roleFenced:
		return 0
	case roleFencedLive:
		k.Fence(ctx, "the node is fenced (marker "+filepath.Join(pgdata, "pgdr.fenced")+") but PostgreSQL runs writable; remove the marker only after rejoining it")
		return 0
	case roleNotPrimary:
		k.Update(func(l *Lease) { l.Reset(time.Now()) })
		k.deps.Failsafe.Reset()
		return 0
	}
	// A writable primary (or one that may be): renew, or fence.
	wasGranted, _, deadline := k.Status()
	deadline = k.deps.Failsafe.Deadline(deadline) // later while every member acknowledges
	expired := !time.Now().Before(deadline)
	if expired {
		k.Fence(ctx, k.expiredReason(wasGranted, deadline))
		return 0
	}
	epoch := k.deps.Epoch.Current()
	sent := time.Now() // the deadline counts from here, never from the answer
	rpcEnd := sent.Add(k.cfg.RPCTimeout)
	if deadline.Before(rpcEnd) {
		rpcEnd = deadline
	}
	rctx, cancel := context.WithDeadline(ctx, rpcEnd)
	resp, err := lc.renew(rctx, &pgdrv1.RenewLeaseRequest{Cluster: k.cfg.Cluster, Node: k.cfg.Node, Epoch: epoch})
	cancel()
	if ctx.Err() != nil {
		return 0
	}
	if k.deps.RenewalFailures != nil && (err != nil || !resp.GetGranted()) {
		k.deps.RenewalFailures.Inc()
	}
	if err != nil {
		warn(err) // the leader unreachable: failsafe may carry on (agent/failsafe)
	} else {
		var fence, granted bool
		var why string
		k.Update(func(l *Lease) {
			fence, why = l.Answer(k.cfg.Node, epoch, sent, resp)
			granted, deadline = l.Granted(), l.Deadline()
		})
		k.deps.Epoch.See(resp.GetEpoch())
		if resp.GetGranted() {
			k.deps.Failsafe.Granted(sent, resp)
		} else {
			k.deps.Failsafe.Refused() // a reachable leader refused: no failsafe
		}
		note := ""
		switch {
		case fence && role == roleUnsure:
			// An incomplete report fences nothing: the node may be a
			// replica whose identity query timed out. The refusal extended
			// nothing, so the deadline still fences a node that stays
			// unsure and is refused.
			note = "; not fencing on a report that could not read the recovery state"
		case fence:
			k.Fence(ctx, why)
			return 0
		}
		if granted && !wasGranted {
			k.deps.Log.Info("primary lease granted", "component", "lease", "epoch", resp.GetEpoch(), "deadline_in", time.Until(deadline).Round(time.Millisecond))
		}
		if !resp.GetGranted() {
			warn(fmt.Errorf("refused: %s%s", resp.GetReason(), note))
		}
	}
	now := time.Now()
	wasGranted, _, deadline = k.Status()
	deadline = k.deps.Failsafe.Deadline(deadline)
	expired = !now.Before(deadline)
	if expired {
		k.Fence(ctx, k.expiredReason(wasGranted, deadline))
		return 0
	}
	k.beat(deadline) // the watchdog fences no later
	return deadline.Sub(now)
}

// beat tells the watchdog the deadline guarded (zero: none).
func (k *Keeper) beat(deadline time.Time) {
	if k.deps.Beat != nil {
		k.deps.Beat(deadline)
	}
}

func (k *Keeper) expiredReason(granted bool, deadline time.Time) string {
	window := k.cfg.TTL - k.cfg.SafetyMargin
	if why := k.deps.Failsafe.ExpiredReason(); why != "" {
		return why
	}
	if !granted {
		return fmt.Sprintf("no primary lease was granted by the coordinator leader within %s (lease_ttl - safety_margin)", window)
	}
	return fmt.Sprintf("the primary lease could not be renewed: its deadline (lease_ttl - safety_margin after the last granted renewal was sent) passed %s ago", time.Since(deadline).Round(time.Millisecond))
}

// leaseConn renews through the session's connection to the leader when a
// session is up, and otherwise through a connection of its own to the
// leader (dial).
type leaseConn struct {
	session func() pgdrv1.AgentServiceClient
	dial    func(ctx context.Context) (*grpc.ClientConn, error)
	conn    *grpc.ClientConn
	cli     pgdrv1.AgentServiceClient
}

func (lc *leaseConn) close() {
	if lc.conn != nil {
		lc.conn.Close()
		lc.conn, lc.cli = nil, nil
	}
}

func (lc *leaseConn) renew(ctx context.Context, req *pgdrv1.RenewLeaseRequest) (*pgdrv1.RenewLeaseResponse, error) {
	if lc.session != nil {
		if cli := lc.session(); cli != nil {
			lc.close()
			return cli.RenewLease(ctx, req)
		}
	}
	if lc.cli == nil {
		if lc.dial == nil {
			return nil, errors.New("no session with the coordinator leader")
		}
		conn, err := lc.dial(ctx)
		if err != nil {
			return nil, err
		}
		lc.conn, lc.cli = conn, pgdrv1.NewAgentServiceClient(conn)
	}
	resp, err := lc.cli.RenewLease(ctx, req)
	if err != nil {
		lc.close() // ask again who leads next time
	}
	return resp, err
}

// Kick asks Run for a round at once instead of at the next failover.loop
// tick: a node that just became a writable primary asks for its first
// grant (which /primary waits for) without waiting up to a loop. It never
// blocks; kicks before that round is taken count once.
func (k *Keeper) Kick() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}
