package daemon

import (
	"context"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/monitor"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// newMonitor builds the local health loop (agent/monitor) on d's checker:
// the failsafe annotates every report, and every newer one reaches the
// role-change hook in report order.
func (d *Daemon) newMonitor() *monitor.Monitor {
	return monitor.New(d.interval(), monitor.Deps{
		Checker:  d.checker,
		Clock:    d.clock,
		Annotate: d.failsafe.Annotate,
		Published: func(r *pgdrv1.HealthReport) {
			d.hooks.Observe(health.Role(r), d.epoch.Current())
		},
		CheckDuration: d.metrics.checkDuration.Observe,
		Log:           d.log,
	})
}

// interval is health.interval (1s when the configuration was not loaded
// through config.Parse).
func (d *Daemon) interval() time.Duration { return monitor.Interval(d.cfg.Health.Interval.Duration) }

// checkTimeout bounds one round of checks (monitor.CheckTimeout).
func (d *Daemon) checkTimeout() time.Duration { return monitor.CheckTimeout(d.interval()) }

// staleAfter is the age past which the latest report no longer speaks for
// the server (monitor.StaleAfter).
func (d *Daemon) staleAfter() time.Duration { return monitor.StaleAfter(d.interval()) }

// Latest returns the most recent report, or nil before the first round.
// The report must not be modified.
// (nil as well without a monitor: a bare Daemon in tests).
func (d *Daemon) Latest() *pgdrv1.HealthReport {
	if d.monitor == nil {
		return nil
	}
	return d.monitor.Latest()
}

// CheckNow runs one round of checks at once, publishes the report (to the
// probes, the metrics and the coordinator) and returns it.
func (d *Daemon) CheckNow(ctx context.Context) *pgdrv1.HealthReport { return d.monitor.CheckNow(ctx) }
