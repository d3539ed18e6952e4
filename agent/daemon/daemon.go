package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/agent/agentsock"
	"github.com/pgdr/pgdr/agent/backuprun"
	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/drillrun"
	"github.com/pgdr/pgdr/agent/epoch"
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
	"github.com/pgdr/pgdr/agent/session"
	"github.com/pgdr/pgdr/agent/walrecv"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/agent/watchdog"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/gossip"
)

// AheadInterval is how often the daemon looks for ready WAL to push ahead.
const AheadInterval = 200 * time.Millisecond

// Daemon is the agent process: the capabilities it built and wired
// (wire.go), run together by Run.
type Daemon struct {
	cfg     *config.Config
	shipper *walship.Shipper
	log     *slog.Logger
	pg      *pgctl.Controller // PostgreSQL's programs, start/stop, local connections
	checker *health.Checker
	metrics *metrics
	hooks   *hooks.Runner // nil without hooks.on_role_change

	// monitor is the local health loop: the latest report, the command
	// echo (agent/monitor).
	monitor *monitor.Monitor
	// epoch is the highest epoch seen (registration, commands, leases);
	// its zero value is ready, capabilities get &d.epoch.
	epoch epoch.Tracker
	// lease is the primary lease, its renewal loop and fencing
	// (agent/lease); it holds no lease without coordinator.addresses.
	lease *lease.Keeper
	// publishedRole is the role of the latest published report; only the
	// monitor's Published callback uses it (under the monitor's lock).
	publishedRole string
	// failsafe is the failsafe (agent/failsafe).
	failsafe *failsafe.Failsafe
	// recloner re-clones a node pg_rewind cannot rejoin (agent/reclone).
	recloner *reclone.Recloner
	// wd is the process watchdog's parent side, guard the promotion
	// guard (agent/watchdog).
	wd    *watchdog.Watchdog
	guard *watchdog.Guard
	// orders carries out the coordinator's orders (agent/orders).
	orders *orders.Executor
	// lclock is the last measurement of the coordinator leader's clock
	// and the skew, the agent's clock minus the leader's.
	lclock *leaderclock.Clock
	// backups carries out the scheduler's backup runs (agent/backuprun).
	backups *backuprun.Runner
	drills  *drillrun.Runner
	// sess is the session with the coordinator leader (agent/session).
	sess *session.Session
	// copier fills the async repositories (agent/repocopy); nil without.
	copier *repocopy.Copier
	// repoStat reads what the repositories hold for the pgdr_repo_*
	// metrics (agent/repostat), every metrics.repo_interval.
	repoStat *repostat.Reader
	// heartbeat commits the write-availability heartbeat on a primary
	// (agent/heartbeat); nil with heartbeat.enabled false.
	heartbeat *heartbeat.Writer
	// receiver streams WAL from the primary into the repositories
	// (agent/walrecv); nil with wal.receive.enabled off.
	receiver *walrecv.Receiver
	// gate acknowledges commits only under a valid lease
	// (agent/commitgate); nil with failover.lease_gated_commits off.
	gate *commitgate.Gate

	// now replaces time.Now for the orders' deadlines in tests (a clock
	// ahead of or behind the leader's); nil in production.
	now func() time.Time
	// clocks replaces watchdog.ReadClocks, the clocks give-up times are
	// judged on, in tests (a wall clock or CLOCK_BOOTTIME that jumps ahead
	// of the monotonic clock, as a resumed VM's does); nil in production.
	clocks func() watchdog.Clocks
	// bootIDPath replaces /proc/sys/kernel/random/boot_id in tests.
	bootIDPath string
}

// clock is the agent's clock for the orders' deadlines: time.Now, or the
// tests' clock. Its readings carry Go's monotonic clock.
func (d *Daemon) clock() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

// New builds a daemon; Run serves until ctx ends.
func New(cfg *config.Config, shipper *walship.Shipper, log *slog.Logger) *Daemon {
	return build(cfg, shipper, log, options{})
}

// Run listens on the configured socket, pushes ready WAL ahead, and serves
// one-shot commands until ctx is cancelled. Alongside it runs the health
// checks every health.interval and, as configured, the HTTP probes and
// metrics (health.listen), the coordinator session, the lease, the
// failsafe and the watchdog (coordinator.addresses) and gossip
// (gossip.bind). Every loop runs in one errgroup and stops when ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	// Who may hand work to the daemon: its own user, root, and the owner
	// of the data directory (SO_PEERCRED; the socket is 0600 as well).
	clients := append(agentsock.TrustedUIDs(d.cfg.Postgres.PGData), 0)
	sock, err := agentsock.Listen(d.cfg.Agent.Socket, clients, d.handle, d.log)
	if err != nil {
		return err
	}
	d.log.Info("agent daemon listening", "socket", d.cfg.Agent.Socket, "cluster", d.cfg.Cluster, "node", d.cfg.Node.Name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer d.checker.Close(context.Background())
	if d.cfg.Gossip.Bind != "" {
		pool, err := d.startGossip(ctx)
		if err != nil {
			sock.Close()
			return err
		}
		defer pool.Close()
		d.failsafe.SetPeers(pool)
	}
	g, gctx := errgroup.WithContext(ctx)
	run := func(f func(context.Context)) {
		g.Go(func() error { f(gctx); return nil })
	}
	run(d.pushAheadLoop)
	if d.copier != nil {
		run(d.copier.Run)
	}
	run(d.monitor.Run)
	if d.heartbeat != nil {
		run(d.heartbeat.Run)
	}
	if d.receiver != nil {
		// Stops with ctx: the spool is fsynced, the next start resumes
		// from it.
		run(d.receiver.Run)
	}
	if d.cfg.Health.Listen != "" {
		run(d.serveHTTP)
		// The repositories are read for /metrics only.
		run(func(ctx context.Context) { d.repoStat.Run(ctx, repoInterval(d.cfg)) })
	}
	if len(d.cfg.Coordinator.Addresses) > 0 {
		run(d.sess.Run)
		run(d.lease.Run)
		run(d.failsafe.Run)
		if d.gate != nil {
			run(d.gate.Run)
		}
		d.resumePendingPromotion(gctx) // before this agent's watchdog relieves the previous one
		if d.wd.Enabled() {
			run(d.wd.Run)
		}
	} else {
		d.log.Info("no coordinator.addresses: running standalone")
	}
	if d.gate == nil {
		// Lease-gated commits off: a setting naming the gate (left from
		// when they were on) is put back to the coordinator's value, or
		// commits would wait for a gate that no longer runs.
		run(func(ctx context.Context) { commitgate.SettleOff(ctx, d.cfg.Postgres.DSN, d.log) })
	}
	// Serves the socket until ctx ends; the socket is gone when it returns.
	g.Go(func() error { return sock.Run(gctx) })
	err = g.Wait()
	d.waitBackups(backupStopWait)
	d.log.Info("agent daemon stopped")
	return err
}

// repoInterval is metrics.repo_interval, its default when the
// configuration was not loaded through Parse.
func repoInterval(cfg *config.Config) time.Duration {
	if d := cfg.Metrics.RepoInterval.Duration; d > 0 {
		return d
	}
	return config.DefaultRepoInterval
}

// backupStopWait bounds how long a stopping daemon waits for a backup run
// it was carrying out to clean up (its context is cancelled with Run's:
// the backup removes what it wrote and its reservation).
const backupStopWait = time.Minute

// waitBackups waits, at most limit, for the backup runs in progress to end,
// so that a stopping agent does not cut a backup's clean-up short and
// leave partial objects in the repositories.
func (d *Daemon) waitBackups(limit time.Duration) {
	if d.backups == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		d.backups.Wait()
		if d.drills != nil {
			d.drills.Wait() // a drill stops its scratch server and removes its copy
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
		d.log.Warn("stopping without waiting longer for a backup run's clean-up", "waited", limit)
	}
}

// EnableWatchdog makes Run start argv (`pgdr-agent watchdog --config F`,
// with the agent's executable) as the watchdog when failover.watchdog is
// on and coordinators are configured.
func (d *Daemon) EnableWatchdog(argv []string) { d.wd.Enable(argv) }

// resumePendingPromotion resumes the guard of a promotion that a previous
// agent process left in pgdata: its watcher (in ctx, the run context)
// fences the node at the give-up time unless a lease is granted by then
// (at once when it passed).
func (d *Daemon) resumePendingPromotion(ctx context.Context) {
	if epoch, giveUp, ok := d.guard.Resume(); ok {
		d.orders.Promoter().Watch(ctx, epoch, giveUp, func() {})
	}
}

// startGossip joins the memberlist pool; joining goes on in the background.
func (d *Daemon) startGossip(ctx context.Context) (*gossip.Pool, error) {
	meta := gossip.Meta{Kind: gossip.KindAgent, Name: d.cfg.Node.Name, Cluster: d.cfg.Cluster, Region: d.cfg.Node.Region}
	meta.API = session.APIURL(d.cfg)
	pool, err := gossip.Start(ctx, gossip.Config{
		Bind:    d.cfg.Gossip.Bind,
		Join:    d.cfg.Gossip.Join,
		KeyFile: d.cfg.Gossip.KeyFile,
		Meta:    meta,
		Logger:  d.log,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip.bind %s: %w", d.cfg.Gossip.Bind, err)
	}
	d.log.Info("gossip started", "bind", d.cfg.Gossip.Bind, "join", d.cfg.Gossip.Join)
	return pool, nil
}

func (d *Daemon) pushAheadLoop(ctx context.Context) {
	pgwal := filepath.Join(d.cfg.Postgres.PGData, "pg_wal")
	t := time.NewTicker(AheadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.shipper.PushAhead(ctx, pgwal, d.cfg.WAL.PushConcurrency)
		}
	}
}

// handle carries out one request a one-shot command handed over on the
// agent socket (agentsock.Handler).
func (d *Daemon) handle(ctx context.Context, req agentsock.Request) error {
	pgwal := filepath.Join(d.cfg.Postgres.PGData, "pg_wal")
	switch req.Op {
	case "wal-push":
		if !within(req.Path, pgwal) {
			return fmt.Errorf("wal-push: %s is not in this node's pg_wal (%s)", req.Path, pgwal)
		}
		return d.shipper.Push(ctx, req.Path)
	case "wal-prefetch":
		if !within(filepath.Join(req.PGWal, "x"), pgwal) {
			return fmt.Errorf("wal-prefetch: %s is not this node's pg_wal (%s)", req.PGWal, pgwal)
		}
		go func() {
			if err := d.shipper.Prefetch(ctx, req.PGWal, req.After, req.SegmentSize); err != nil {
				d.log.Warn("prefetch", "after", req.After, "err", err)
			}
		}()
		return nil
	}
	return fmt.Errorf("unknown operation %q", req.Op)
}

// within reports whether path is directly inside dir, comparing resolved
// directories so symlinked data directories still match.
func within(path, dir string) bool {
	pd, err1 := filepath.EvalSymlinks(filepath.Dir(path))
	dd, err2 := filepath.EvalSymlinks(dir)
	if err1 != nil || err2 != nil {
		return filepath.Dir(path) == dir
	}
	return pd == dd && !strings.Contains(filepath.Base(path), string(filepath.Separator))
}
