package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
)

// fence stops PostgreSQL at once (fast shutdown) and marks the node
// fenced: /primary turns 503 before the server is even asked to stop, the
// marker file makes sure nothing starts it writable again by itself, and
// the next report says fenced.
func (d *Daemon) fence(ctx context.Context, reason string) error {
	d.fenceMu.Lock()
	defer d.fenceMu.Unlock()
	// Two fences can race (an order and the lease loop that saw the lease
	// fenced while its last report still said writable): the second finds
	// the work done and keeps the first one's marker and reason.
	if fi, _ := health.ReadFenced(d.cfg.Postgres.PGData); fi != nil && !pgctl.PostmasterRunning(d.cfg.Postgres.PGData) {
		d.log.Info("already fenced: PostgreSQL is stopped and the marker is in place", "reason", reason, "marker_reason", fi.Reason)
		return nil
	}
	epoch := d.epoch.Current()
	d.log.Error("FENCING PostgreSQL: stopping it (fast shutdown)", "reason", reason, "epoch", epoch, "pgdata", d.cfg.Postgres.PGData)
	d.leaseMu.Lock()
	if d.lease != nil {
		d.lease.Fence(reason)
	}
	d.leaseMu.Unlock()
	d.metrics.fenced.Set(1)
	// The fence outlives a daemon shutdown that begins meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	var errs []error
	if err := health.WriteFenced(d.cfg.Postgres.PGData, health.FenceInfo{Node: d.cfg.Node.Name, Reason: reason, Epoch: epoch, Time: time.Now().UTC()}); err != nil {
		errs = append(errs, fmt.Errorf("writing the fenced marker: %w", err))
	}
	start := time.Now()
	if err := d.pg.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stopping PostgreSQL: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("fencing failed", "reason", reason, "err", err)
	} else {
		d.log.Error("PostgreSQL fenced (stopped)", "reason", reason, "epoch", epoch, "stop_took", time.Since(start).Round(time.Millisecond))
	}
	d.CheckNow(ctx)
	return err
}

// unfence clears the fence in memory and on disk (rejoin).
func (d *Daemon) unfence() error {
	if err := health.RemoveFenced(d.cfg.Postgres.PGData); err != nil {
		return fmt.Errorf("removing the fenced marker: %w", err)
	}
	d.leaseMu.Lock()
	if d.lease != nil {
		d.lease.Unfence(time.Now())
	}
	d.leaseMu.Unlock()
	d.metrics.fenced.Set(0)
	return nil
}
