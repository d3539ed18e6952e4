package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/pgdr/pgdr/agent/lease"
)

// leaseConfig is the lease's part of d's configuration.
func (d *Daemon) leaseConfig() lease.Config {
	return lease.Config{
		Cluster:      d.cfg.Cluster,
		Node:         d.cfg.Node.Name,
		PGData:       d.cfg.Postgres.PGData,
		TTL:          d.leaseTTL(),
		SafetyMargin: d.safetyMargin(),
		Loop:         d.loopInterval(),
		RPCTimeout:   rpcTimeout,
	}
}

// newLease builds the keeper of the lease held by held (agent/lease).
func (d *Daemon) newLease(held *lease.Holder) *lease.Keeper {
	ld := &leaderDialer{d: d}
	return lease.New(d.leaseConfig(), held, lease.Deps{
		Session:     d.session,
		DialLeader:  ld.dial,
		Report:      d.Latest,
		CheckNow:    d.CheckNow,
		Epoch:       &d.epoch,
		PG:          d.pg,
		Failsafe:    d.failsafe,
		Beat:        d.watchdogBeat,
		FencedGauge: d.metrics.fenced,
		Log:         d.log,
	})
}

// loopInterval, leaseTTL and safetyMargin are the failover.* settings
// (their defaults when the configuration was not loaded through Parse).
func (d *Daemon) loopInterval() time.Duration { return lease.LoopOf(d.cfg.Failover.Loop.Duration) }

func (d *Daemon) leaseTTL() time.Duration { return lease.TTLOf(d.cfg.Failover.LeaseTTL.Duration) }

func (d *Daemon) safetyMargin() time.Duration {
	return lease.SafetyMarginOf(d.cfg.Failover.SafetyMargin.Duration)
}

// leaseServing is /primary's lease condition: true without coordinators
// (standalone keeps the report-only behaviour).
func (d *Daemon) leaseServing(now time.Time) (bool, string) {
	return d.failsafe.Serving(now) // the lease's verdict, extended by failsafe
}

// leaseEnabled reports whether a lease is held (coordinator.addresses).
func (d *Daemon) leaseEnabled() bool { return d.lease != nil && d.lease.Enabled() }

// leaseGranted reports whether a lease is held and was granted since the
// node last was positively not a primary.
func (d *Daemon) leaseGranted() bool { return d.lease != nil && d.lease.Granted() }

// fence stops PostgreSQL at once and marks the node fenced (lease.Keeper.Fence).
func (d *Daemon) fence(ctx context.Context, reason string) error { return d.lease.Fence(ctx, reason) }

// unfence clears the fence in memory and on disk (rejoin).
func (d *Daemon) unfence() error { return d.lease.Unfence() }

// leaderDialer connects the lease loop to the leader while no session is
// up, found by asking the configured coordinators in turn, beginning
// with the one that named a leader last. Only the lease loop uses it.
type leaderDialer struct {
	d    *Daemon
	next int
}

func (ld *leaderDialer) dial(ctx context.Context) (*grpc.ClientConn, error) {
	cfg := ld.d.cfg.Coordinator
	opts, err := dialOptions(cfg)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i := range cfg.Addresses {
		idx := (ld.next + i) % len(cfg.Addresses)
		resp, err := askLeader(ctx, cfg.Addresses[idx], opts)
		if err == nil && resp.GetKnown() && resp.GetApiAddress() != "" {
			conn, err := grpc.NewClient(ld.d.leaderDialAddress(resp), opts...)
			if err != nil {
				return nil, err
			}
			ld.next = idx
			return conn, nil
		}
		if err == nil {
			err = errors.New("no leader elected yet")
		}
		errs = append(errs, fmt.Errorf("%s: %w", cfg.Addresses[idx], err))
		if ctx.Err() != nil {
			break
		}
	}
	ld.next = (ld.next + 1) % len(cfg.Addresses)
	return nil, fmt.Errorf("no coordinator named a leader: %w", errors.Join(errs...))
}
