package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
)

// Fence stops PostgreSQL at once (fast shutdown) and marks the node
// fenced: /primary turns 503 before the server is even asked to stop, the
// marker file makes sure nothing starts it writable again by itself, and
// the next report says fenced.
func (k *Keeper) Fence(ctx context.Context, reason string) error {
	k.fenceMu.Lock()
	defer k.fenceMu.Unlock()
	// Two fences can race (an order and the lease loop that saw the lease
	// fenced while its last report still said writable): the second finds
	// the work done and keeps the first one's marker and reason.
	if fi, _ := health.ReadFenced(k.cfg.PGData); fi != nil && !pgctl.PostmasterRunning(k.cfg.PGData) {
		k.deps.Log.Info("already fenced: PostgreSQL is stopped and the marker is in place", "reason", reason, "marker_reason", fi.Reason)
		return nil
	}
	epoch := k.deps.Epoch.Current()
	k.deps.Log.Error("FENCING PostgreSQL: stopping it (fast shutdown)", "reason", reason, "epoch", epoch, "pgdata", k.cfg.PGData)
	k.Update(func(l *Lease) { l.Fence(reason) })
	k.setFenced(1)
	// The fence outlives a daemon shutdown that begins meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	var errs []error
	if err := health.WriteFenced(k.cfg.PGData, health.FenceInfo{Node: k.cfg.Node, Reason: reason, Epoch: epoch, Time: time.Now().UTC()}); err != nil {
		errs = append(errs, fmt.Errorf("writing the fenced marker: %w", err))
	}
	start := time.Now()
	if err := k.deps.PG.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stopping PostgreSQL: %w", err))
	}
	err := errors.Join(errs...)
	if err != nil {
		k.deps.Log.Error("fencing failed", "reason", reason, "err", err)
	} else {
		k.deps.Log.Error("PostgreSQL fenced (stopped)", "reason", reason, "epoch", epoch, "stop_took", time.Since(start).Round(time.Millisecond))
	}
	if k.deps.CheckNow != nil {
		k.deps.CheckNow(ctx)
	}
	return err
}

// Unfence clears the fence in memory and on disk (rejoin).
func (k *Keeper) Unfence() error {
	if err := health.RemoveFenced(k.cfg.PGData); err != nil {
		return fmt.Errorf("removing the fenced marker: %w", err)
	}
	k.Update(func(l *Lease) { l.Unfence(time.Now()) })
	k.setFenced(0)
	return nil
}

// setFenced sets pgdr_agent_fenced.
func (k *Keeper) setFenced(v float64) {
	if k.deps.FencedGauge != nil {
		k.deps.FencedGauge.Set(v)
	}
}
