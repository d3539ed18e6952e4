package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// loopInterval, leaseTTL and safetyMargin are the failover.* settings
// (their defaults when the configuration was not loaded through Parse).
func (d *Daemon) loopInterval() time.Duration {
	if v := d.cfg.Failover.Loop.Duration; v > 0 {
		return v
	}
	return time.Second
}

func (d *Daemon) leaseTTL() time.Duration {
	if v := d.cfg.Failover.LeaseTTL.Duration; v > 0 {
		return v
	}
	return 5 * time.Second
}

func (d *Daemon) safetyMargin() time.Duration {
	if v := d.cfg.Failover.SafetyMargin.Duration; v > 0 {
		return v
	}
	return time.Second
}

// leaseServing is /primary's lease condition: true without coordinators
// (standalone keeps the report-only behaviour).
func (d *Daemon) leaseServing(now time.Time) (bool, string) {
	return d.failsafe.Serving(now) // the lease's verdict, extended by failsafe
}

// leaseRole is what the lease loop makes of the latest report.
type leaseRole int

const (
	roleWait       leaseRole = iota // no report yet
	roleNotPrimary                  // a replica, or stopped: no writes possible
	roleMaybe                       // writable, or running and not known to be a replica
	roleFenced                      // fenced and not writable
	roleFencedLive                  // fenced, yet running writable: stop it again
	// roleUnsure: running and answering, but the report could not say
	// whether it is in recovery, and no standby.signal says it is a
	// replica: renew (a primary under load keeps its lease), but a refusal
	// does not fence it; only the lease deadline does.
	roleUnsure
)

// classify says what the lease loop makes of the latest report. Only a
// complete report (recovery state read) can say "writable"; when it could
// not, standby.signal decides before anything else the report says, so
// that a replica whose identity query timed out is never taken for a
// primary and fenced. A complete report that says writable wins over
// standby.signal: PostgreSQL accepting writes is a fact, and a writable
// server must keep renewing or be fenced, whatever files lie around.
func classify(r *pgdrv1.HealthReport, fenced bool, standbySignal bool) leaseRole {
	known := r != nil && r.Connectable && !r.RecoveryUnknown
	writable := known && !r.InRecovery
	switch {
	case fenced && writable:
		return roleFencedLive
	case fenced:
		return roleFenced
	case r == nil:
		return roleWait
	case writable:
		return roleMaybe
	case standbySignal:
		// Running but not answering (a replica replaying before it is
		// consistent refuses connections), or answering without saying
		// whether it is in recovery: standby.signal says what it is.
		return roleNotPrimary
	case known && r.InRecovery, !r.PostmasterAlive:
		return roleNotPrimary
	case r.Connectable && r.RecoveryUnknown:
		return roleUnsure
	}
	return roleMaybe
}

// leaseLoop renews the primary lease every failover.loop while the local
// server is (or may be) a writable primary, and fences it when the lease
// is lost: at the deadline, or at once when the leader names another
// primary or a newer epoch.
func (d *Daemon) leaseLoop(ctx context.Context) {
	log := d.log.With("component", "lease")
	lc := &leaseConn{d: d}
	defer lc.close()
	t := time.NewTicker(d.loopInterval())
	defer t.Stop()
	var lastErr string
	var lastErrAt time.Time
	for {
		wait := d.leaseRound(ctx, lc, func(err error) {
			if s := err.Error(); s != lastErr || time.Since(lastErrAt) > 10*time.Second {
				log.Warn("renewing the primary lease failed", "err", err)
				lastErr, lastErrAt = s, time.Now()
			}
		})
		if wait <= 0 && ctx.Err() == nil {
			d.watchdogBeat(time.Time{}) // nothing to guard (watchdog.go)
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
		}
		if tm != nil {
			tm.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// leaseRound does one round and returns how long until the deadline (0:
// no deadline to watch).
func (d *Daemon) leaseRound(ctx context.Context, lc *leaseConn, warn func(error)) time.Duration {
	r := d.Latest()
	pgdata := d.cfg.Postgres.PGData
	_, sigErr := os.Stat(filepath.Join(pgdata, "standby.signal"))
	d.leaseMu.Lock()
	fenced := d.lease.Fenced() != "" || (r != nil && r.Fenced)
	d.leaseMu.Unlock()
	role := classify(r, fenced, sigErr == nil)
	switch role {
	case roleWait, roleFenced:
		return 0
	case roleFencedLive:
		d.fence(ctx, "the node is fenced (marker "+filepath.Join(pgdata, "pgdr.fenced")+") but PostgreSQL runs writable; remove the marker only after rejoining it")
		return 0
	case roleNotPrimary:
		d.leaseMu.Lock()
		d.lease.Reset(time.Now())
		d.leaseMu.Unlock()
		d.failsafe.Reset()
		return 0
	}
	// A writable primary (or one that may be): renew, or fence.
	d.leaseMu.Lock()
	deadline, wasGranted := d.lease.Deadline(), d.lease.Granted()
	d.leaseMu.Unlock()
	deadline = d.failsafe.Deadline(deadline) // later while every member acknowledges
	expired := !time.Now().Before(deadline)
	if expired {
		d.fence(ctx, d.expiredReason(wasGranted, deadline))
		return 0
	}
	epoch := d.epoch.Current()
	sent := time.Now() // the deadline counts from here, never from the answer
	rpcEnd := sent.Add(rpcTimeout)
	if deadline.Before(rpcEnd) {
		rpcEnd = deadline
	}
	rctx, cancel := context.WithDeadline(ctx, rpcEnd)
	resp, err := lc.renew(rctx, &pgdrv1.RenewLeaseRequest{Cluster: d.cfg.Cluster, Node: d.cfg.Node.Name, Epoch: epoch})
	cancel()
	if ctx.Err() != nil {
		return 0
	}
	if err != nil {
		warn(err) // the leader unreachable: failsafe may carry on (agent/failsafe)
	} else {
		d.leaseMu.Lock()
		fence, why := d.lease.Answer(d.cfg.Node.Name, epoch, sent, resp)
		granted := d.lease.Granted()
		deadline = d.lease.Deadline()
		d.leaseMu.Unlock()
		d.epoch.See(resp.GetEpoch())
		if resp.GetGranted() {
			d.failsafe.Granted(sent, resp)
		} else {
			d.failsafe.Refused() // a reachable leader refused: no failsafe
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
			d.fence(ctx, why)
			return 0
		}
		if granted && !wasGranted {
			d.log.Info("primary lease granted", "component", "lease", "epoch", resp.GetEpoch(), "deadline_in", time.Until(deadline).Round(time.Millisecond))
		}
		if !resp.GetGranted() {
			warn(fmt.Errorf("refused: %s%s", resp.GetReason(), note))
		}
	}
	now := time.Now()
	d.leaseMu.Lock()
	deadline, wasGranted = d.lease.Deadline(), d.lease.Granted()
	d.leaseMu.Unlock()
	deadline = d.failsafe.Deadline(deadline)
	expired = !now.Before(deadline)
	if expired {
		d.fence(ctx, d.expiredReason(wasGranted, deadline))
		return 0
	}
	d.watchdogBeat(deadline) // the watchdog fences no later (watchdog.go)
	return deadline.Sub(now)
}

func (d *Daemon) expiredReason(granted bool, deadline time.Time) string {
	window := d.leaseTTL() - d.safetyMargin()
	if why := d.failsafe.ExpiredReason(); why != "" {
		return why
	}
	if !granted {
		return fmt.Sprintf("no primary lease was granted by the coordinator leader within %s (lease_ttl - safety_margin)", window)
	}
	return fmt.Sprintf("the primary lease could not be renewed: its deadline (lease_ttl - safety_margin after the last granted renewal was sent) passed %s ago", time.Since(deadline).Round(time.Millisecond))
}

// leaseConn renews through the session's connection to the leader when a
// session is up, and otherwise through a connection of its own to the
// leader, found by asking the configured coordinators.
type leaseConn struct {
	d    *Daemon
	next int
	conn *grpc.ClientConn
	cli  pgdrv1.AgentServiceClient
}

func (lc *leaseConn) close() {
	if lc.conn != nil {
		lc.conn.Close()
		lc.conn, lc.cli = nil, nil
	}
}

func (lc *leaseConn) renew(ctx context.Context, req *pgdrv1.RenewLeaseRequest) (*pgdrv1.RenewLeaseResponse, error) {
	if cli := lc.d.session(); cli != nil {
		lc.close()
		return cli.RenewLease(ctx, req)
	}
	if lc.cli == nil {
		if err := lc.dial(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := lc.cli.RenewLease(ctx, req)
	if err != nil {
		lc.close() // ask again who leads next time
	}
	return resp, err
}

func (lc *leaseConn) dial(ctx context.Context) error {
	cfg := lc.d.cfg.Coordinator
	opts, err := dialOptions(cfg)
	if err != nil {
		return err
	}
	var errs []error
	for i := range cfg.Addresses {
		idx := (lc.next + i) % len(cfg.Addresses)
		resp, err := askLeader(ctx, cfg.Addresses[idx], opts)
		if err == nil && resp.GetKnown() && resp.GetApiAddress() != "" {
			conn, err := grpc.NewClient(lc.d.leaderDialAddress(resp), opts...)
			if err != nil {
				return err
			}
			lc.next = idx
			lc.conn, lc.cli = conn, pgdrv1.NewAgentServiceClient(conn)
			return nil
		}
		if err == nil {
			err = errors.New("no leader elected yet")
		}
		errs = append(errs, fmt.Errorf("%s: %w", cfg.Addresses[idx], err))
		if ctx.Err() != nil {
			break
		}
	}
	lc.next = (lc.next + 1) % len(cfg.Addresses)
	return fmt.Errorf("no coordinator named a leader: %w", errors.Join(errs...))
}
