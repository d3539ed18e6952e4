package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/agent/backuprun"
	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/divergence"
	"github.com/pgdr/pgdr/agent/drillrun"
	"github.com/pgdr/pgdr/agent/failsafe"
	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/heartbeat"
	"github.com/pgdr/pgdr/agent/hooks"
	"github.com/pgdr/pgdr/agent/leaderclock"
	"github.com/pgdr/pgdr/agent/lease"
	"github.com/pgdr/pgdr/agent/monitor"
	"github.com/pgdr/pgdr/agent/orders"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/agent/reclone"
	"github.com/pgdr/pgdr/agent/repocopy"
	"github.com/pgdr/pgdr/agent/repostat"
	"github.com/pgdr/pgdr/agent/runcmd"
	"github.com/pgdr/pgdr/agent/session"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/agent/watchdog"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The wiring: build makes every capability and hands each what it needs
// from the others. A capability's method is passed as it is where it
// satisfies the other's interface; the closures below stand for the
// capabilities built later (the wiring has cycles: the lease fences for
// the failsafe, which the lease reads), and the adapters at the end of
// the file translate where the types differ.

// options replace parts of the wiring in tests.
type options struct {
	// openPromotion replaces the local server's side of a promotion (nil:
	// a connection to the local server).
	openPromotion func(context.Context) (orders.Promotion, error)
	// client replaces the session's client for the orders' Epoch call
	// (nil: the session's).
	client pgdrv1.AgentServiceClient
}

// build makes the daemon of cfg: the capabilities and their wiring.
func build(cfg *config.Config, shipper *walship.Shipper, log *slog.Logger, opt options) *Daemon {
	d := &Daemon{cfg: cfg, shipper: shipper, log: log}
	d.pg = newPG(cfg, log)
	interval := monitor.Interval(cfg.Health.Interval.Duration)
	hc := health.ConfigFrom(cfg)
	hc.Timeout = monitor.CheckTimeout(interval)
	hc.CopyLag = func() []health.CopyLag { return copyLags(d.copier.Status()) }
	if cfg.Heartbeat.On() {
		d.heartbeat = heartbeat.New(heartbeat.Config{DSN: cfg.Postgres.DSN, Node: cfg.Node.Name, PGData: cfg.Postgres.PGData,
			Interval: cfg.Heartbeat.Interval.Duration}, heartbeat.Deps{Report: func() *pgdrv1.HealthReport { return d.monitor.Latest() },
			Log: log.With("component", "heartbeat")})
		hc.Heartbeat = func() (time.Time, time.Time, time.Duration) {
			last, run := d.heartbeat.Last()
			return last, run, d.heartbeat.Interval()
		}
	}
	d.checker = health.NewChecker(hc, log.With("component", "health"))
	lc := leaseConfig(cfg)
	held := lease.NewHolder(nil)
	if len(cfg.Coordinator.Addresses) > 0 {
		held.Set(lease.Start(time.Now(), lc))
	}
	latest := func() *pgdrv1.HealthReport { return d.monitor.Latest() }
	fence := func(ctx context.Context, reason string) error { return d.lease.Fence(ctx, reason) }
	d.failsafe = failsafe.New(failsafeConfig(cfg), failsafe.Deps{
		Lease:  held,
		Fence:  fence,
		Epoch:  d.epoch.Current,
		Report: latest,
		Log:    log,
	})
	if cfg.Failover.LeaseGatedCommits.On() && len(cfg.Coordinator.Addresses) > 0 {
		// Acknowledges only while the failsafe's Serving (the lease's
		// verdict, extended only while every member acknowledges) holds.
		d.gate = commitgate.New(commitgate.Config{DSN: cfg.Postgres.DSN, Settle: true}, d.failsafe, log)
	}
	d.wd = watchdog.New(watchdogConfig(cfg), watchdog.Deps{
		Lease:    held,
		Epoch:    d.epoch.Current,
		Reported: func() bool { return d.monitor.Latest() != nil },
		Clocks:   d.readClocks,
		Log:      log,
	})
	d.guard = watchdog.NewGuard(watchdog.GuardConfig{PGData: cfg.Postgres.PGData, BootID: func() string { return watchdog.ReadBootID(d.bootIDPath) }}, d.wd, log)
	d.metrics = newMetrics(cfg.Cluster, cfg.Node.Name, latest, d.failsafe.Gauges)
	if d.gate != nil {
		d.metrics.registerGate(d.gate.Stats)
	}
	d.lclock = leaderclock.New(log, d.metrics.clockSkew)
	d.hooks = hooks.New(cfg, log, prometheus.WrapRegistererWith(prometheus.Labels{"cluster": cfg.Cluster, "node": cfg.Node.Name}, d.metrics.reg))
	// The failsafe annotates every report, and every newer one reaches
	// the role-change hook in report order.
	d.monitor = monitor.New(interval, monitor.Deps{
		Checker:       d.checker,
		Clock:         d.clock,
		Annotate:      d.failsafe.Annotate,
		Published:     d.published,
		CheckDuration: d.metrics.checkDuration.Observe,
		Log:           log,
	})
	d.lease = lease.New(lc, held, lease.Deps{
		Session:         func() pgdrv1.AgentServiceClient { return d.sess.Client() },
		DialLeader:      session.NewDialer(cfg).Dial,
		Report:          d.monitor.Latest,
		CheckNow:        d.monitor.CheckNow,
		Epoch:           &d.epoch,
		PG:              d.pg,
		Failsafe:        d.failsafe,
		Beat:            d.wd.Beat,
		FencedGauge:     d.metrics.fenced,
		RenewalFailures: d.metrics.work.renewalFailures,
		Log:             log,
	})
	d.metrics.state = &stateCollector{
		latest:   latest,
		archiver: d.checker.Archiver,
		lease: func() (time.Time, bool) {
			granted, fenced, deadline := d.lease.Status()
			return deadline, granted && fenced == ""
		},
		now: time.Now,
	}
	d.metrics.labeled.MustRegister(d.metrics.state)
	d.recloner = newRecloner(cfg, d.pg, log, d.lease.Unfence, d.monitor.CheckNow)
	d.orders = orders.New(cfg, orders.Deps{
		Log:         log,
		PG:          d.pg,
		Epoch:       &d.epoch,
		LeaderClock: d.lclock,
		Clock:       d.clock,
		Session: func() orders.EpochClient {
			cli := opt.client
			if cli == nil {
				cli = d.sess.Client()
			}
			if cli != nil {
				return cli
			}
			return nil // not a non-nil interface holding a nil client
		},
		RPCTimeout:    session.RPCTimeout,
		SafetyMargin:  func() time.Duration { return lc.SafetyMargin },
		Monitor:       d.monitor,
		Failsafe:      d.failsafe,
		Guard:         ordersGuard{guard: d.guard, clocks: d.readClocks},
		Granted:       held.Granted,
		Fence:         d.lease.Fence,
		Unfence:       d.lease.Unfence,
		Reclone:       d.metrics.work.recloner(d.recloner.Reclone),
		OpenPromotion: opt.openPromotion,
		Divergence: func(ctx context.Context, epoch uint64, primary, dsn string) *pgdrv1.DivergenceSummary {
			dlog := log.With("component", "divergence")
			return divergence.Guarded(dlog, cfg.Node.Name, nil, func() *pgdrv1.DivergenceSummary {
				return divergence.Summary(divergence.Make(ctx, divergence.Input{Cfg: cfg, PG: d.pg, Log: dlog,
					Epoch: epoch, NewPrimary: primary, DSN: dsn}))
			})
		},
		GateRefresh: gateRefresh(d.gate),
	})
	var repos []repo.Repo
	if shipper != nil { // tests build daemons without one
		repos = shipper.Repos()
		shipper.SetObserver(d.metrics.work)
	}
	d.metrics.work.registerRepos(repos)
	// What the repositories hold, read on an interval (Run).
	d.repoStat = repostat.New(cfg.Cluster, repos, log.With("component", "repostat"))
	d.metrics.labeled.MustRegister(&repoCollector{snapshots: d.repoStat.Snapshots, latest: latest})
	// The async repositories' copier (nil without one): config validation
	// made agent.state_dir absolute, which is all FromConfig checks.
	if c, err := repocopy.FromConfig(cfg, repos, log, repocopy.Options{}); err != nil {
		log.Error("async repositories will not be copied", "err", err)
	} else {
		d.copier = c
	}
	d.metrics.registerCopyLag(d.copier.Status)
	if d.receiver = d.newReceiver(cfg, shipper, log); d.receiver != nil {
		d.metrics.registerReceiver(d.receiver.Status)
	}
	d.backups = backuprun.New(backuprun.Deps{Cluster: cfg.Cluster, Node: cfg.Node.Name, Repos: repos, Take: d.metrics.work.taker(backuprun.Taker(cfg, log, nil)), Log: log,
		Expire:    backuprun.Expirer(cfg, log, false),
		Completer: backuprun.CompleterFunc(func(ctx context.Context, res *pgdrv1.CommandResult) error { return d.sess.Complete(ctx, res) })})
	d.drills = drillrun.New(drillrun.Deps{Cluster: cfg.Cluster, Node: cfg.Node.Name, Run: d.metrics.work.driller(drillrun.Driller(cfg, repos, log, "")), Log: log,
		Completer: backuprun.CompleterFunc(func(ctx context.Context, res *pgdrv1.CommandResult) error { return d.sess.Complete(ctx, res) })})
	d.sess = session.New(cfg, session.Deps{
		Executor:    d.orders,
		Backups:     d.backups,
		Drills:      d.drills,
		Commands:    runcmd.New(cfg, log),
		Monitor:     d.monitor,
		Epoch:       &d.epoch,
		LeaderClock: d.lclock,
		Failsafe:    d.failsafe,
		Watchdog:    d.wd,
		Clock:       d.clock,
		Connected:   d.metrics.coordinator,
		Log:         log,
	})
	return d
}

// gateRefresh is the gate's Refresh for the orders, nil without a gate.
func gateRefresh(g *commitgate.Gate) func(context.Context) error {
	if g == nil {
		return nil
	}
	return g.Refresh
}

// newPG is the PostgreSQL process control for cfg's server.
func newPG(cfg *config.Config, log *slog.Logger) *pgctl.Controller {
	return pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData, DSN: cfg.Postgres.DSN, Log: log})
}

// newRecloner builds the agent's recloner (agent/reclone), with the
// orders' recovery settings and wait for streaming, the unfence and the
// health checks it calls.
func newRecloner(cfg *config.Config, pg *pgctl.Controller, log *slog.Logger, unfence func() error, checkNow func(context.Context) *pgdrv1.HealthReport) *reclone.Recloner {
	return reclone.New(reclone.Deps{
		Cfg:             cfg,
		PG:              pg,
		Log:             log,
		ConfigFiles:     orders.ConfigFiles(),
		StreamWait:      orders.RejoinWait,
		HostPort:        orders.HostPort,
		PrimaryConninfo: orders.PrimaryConninfo,
		WriteStandbyConfig: func(epoch uint64, dsn string) error {
			return orders.WriteStandbyConfig(cfg, pg, epoch, dsn)
		},
		WaitStreaming: func(ctx context.Context, timeout time.Duration, host string, port uint16) (string, error) {
			return orders.WaitStreaming(ctx, pg, timeout, host, port)
		},
		Unfence:  unfence,
		CheckNow: func(ctx context.Context) { checkNow(ctx) },
	})
}

// leaseConfig is the lease's part of cfg (the failover.* settings, their
// defaults when the configuration was not loaded through Parse).
func leaseConfig(cfg *config.Config) lease.Config {
	return lease.Config{
		Cluster:      cfg.Cluster,
		Node:         cfg.Node.Name,
		PGData:       cfg.Postgres.PGData,
		TTL:          lease.TTLOf(cfg.Failover.LeaseTTL.Duration),
		SafetyMargin: lease.SafetyMarginOf(cfg.Failover.SafetyMargin.Duration),
		Loop:         lease.LoopOf(cfg.Failover.Loop.Duration),
		RPCTimeout:   session.RPCTimeout,
	}
}

// failsafeConfig is the failsafe's part of cfg.
func failsafeConfig(cfg *config.Config) failsafe.Config {
	f := cfg.Failover.Failsafe
	lc := leaseConfig(cfg)
	return failsafe.Config{
		Cluster:      cfg.Cluster,
		Node:         cfg.Node.Name,
		Enabled:      (f == nil || *f) && cfg.Gossip.KeyFile != "",
		KeyFile:      cfg.Gossip.KeyFile,
		Socket:       cfg.Agent.Socket,
		LeaseTTL:     lc.TTL,
		SafetyMargin: lc.SafetyMargin,
		Loop:         lc.Loop,
	}
}

// watchdogConfig is the process watchdog's part of cfg (off until
// EnableWatchdog).
func watchdogConfig(cfg *config.Config) watchdog.Config {
	w := cfg.Failover.Watchdog
	return watchdog.Config{
		Enabled:      w == nil || *w,
		SafetyMargin: lease.SafetyMarginOf(cfg.Failover.SafetyMargin.Duration),
		PIDPath:      cfg.Agent.Socket + ".watchdog.pid",
	}
}

// readClocks is watchdog.ReadClocks, or the tests' clocks (d.clocks).
func (d *Daemon) readClocks() watchdog.Clocks {
	if d.clocks != nil {
		return d.clocks()
	}
	return watchdog.ReadClocks()
}

// ordersGuard is the promotion guard as the orders use it (orders.Guard):
// agent/watchdog's Guard, judged on the daemon's clocks (the tests'
// jumping clocks, or the real ones).
type ordersGuard struct {
	guard  *watchdog.Guard
	clocks func() watchdog.Clocks
}

func (g ordersGuard) ReadClocks() watchdog.Clocks { return g.clocks() }
func (g ordersGuard) Unguard()                    { g.guard.Unguard() }
func (g ordersGuard) Guard(epoch uint64, giveUp watchdog.GiveUpTime) error {
	return g.guard.Guard(epoch, giveUp)
}

// copyLags is the copier's backlog as the health checks read it.
func copyLags(st []repocopy.Status) []health.CopyLag {
	out := make([]health.CopyLag, 0, len(st))
	for _, s := range st {
		out = append(out, health.CopyLag{Repo: s.Repo, Bytes: s.LagBytes, OldestMissing: s.OldestMissing})
	}
	return out
}

// published is the monitor's Published callback (under the monitor's
// lock): the role-change hook, and the lease's kick when the node turns
// primary.
func (d *Daemon) published(r *pgdrv1.HealthReport) {
	role := health.Role(r)
	d.hooks.Observe(role, d.epoch.Current())
	// Just promoted (the promote order checks at once), or the first
	// report of an agent started next to a running primary (an upgrade):
	// ask for the grant now, not at the lease loop's next tick, so that
	// /primary turns 200 (and routing follows) without waiting up to
	// failover.loop. The loop's first round ran before any report (it
	// waits for none) and found nothing to renew.
	if role == health.RolePrimary && d.publishedRole != health.RolePrimary && d.lease != nil {
		d.lease.Kick()
	}
	d.publishedRole = role
}
