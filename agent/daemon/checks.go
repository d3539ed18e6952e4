package daemon

import (
	"context"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// interval is health.interval (1s when the configuration was not loaded
// through config.Parse).
func (d *Daemon) interval() time.Duration {
	if iv := d.cfg.Health.Interval.Duration; iv > 0 {
		return iv
	}
	return time.Second
}

// checkTimeout bounds one round of checks: long enough for a loaded
// server, short enough that a hung one is noticed within a few intervals.
func (d *Daemon) checkTimeout() time.Duration {
	return min(max(2*d.interval(), 2*time.Second), 10*time.Second)
}

// staleAfter is the age past which the latest report no longer speaks for
// the server (the checks themselves hang or stopped).
func (d *Daemon) staleAfter() time.Duration {
	return d.checkTimeout() + 3*d.interval()
}

// Latest returns the most recent report, or nil before the first round.
// The report must not be modified.
func (d *Daemon) Latest() *pgdrv1.HealthReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.latest
}

// CheckNow runs one round of checks at once, publishes the report (to the
// probes, the metrics and the coordinator) and returns it.
func (d *Daemon) CheckNow(ctx context.Context) *pgdrv1.HealthReport {
	start := time.Now()
	// The checks begin after sampled, on the clock that stamps received
	// commands: the report names the latest command received by then.
	sampled := d.clock()
	r := d.checker.Check(ctx)
	r.AfterCommandId = d.echo.before(sampled)
	d.failsafe.Annotate(r)
	d.metrics.checkDuration.Observe(time.Since(start).Seconds())
	d.mu.Lock()
	prev := d.latest
	// Rounds may overlap (check_now during the loop's round): keep the newer.
	if prev == nil || !r.GetTime().AsTime().Before(prev.GetTime().AsTime()) {
		d.latest = r
		// Under d.mu, so that roles reach the hook in report order;
		// Observe never blocks.
		d.hooks.Observe(health.Role(r), d.epoch.Current())
	}
	d.mu.Unlock()
	select {
	case d.reported <- struct{}{}:
	default:
	}
	d.logTransition(prev, r)
	return r
}

// logTransition logs when the server's role or health changes, not every
// round.
func (d *Daemon) logTransition(prev, r *pgdrv1.HealthReport) {
	role, healthy := health.Role(r), health.Healthy(r)
	if prev != nil && health.Role(prev) == role && health.Healthy(prev) == healthy && (prev.Error == "") == (r.Error == "") {
		return
	}
	if healthy && r.Error == "" {
		d.log.Info("health", "role", role, "healthy", true, "timeline", r.Timeline)
		return
	}
	d.log.Warn("health", "role", role, "healthy", healthy, "error", r.Error)
}

// healthLoop runs the checks every health.interval until ctx ends.
func (d *Daemon) healthLoop(ctx context.Context) {
	t := time.NewTicker(d.interval())
	defer t.Stop()
	for {
		d.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
