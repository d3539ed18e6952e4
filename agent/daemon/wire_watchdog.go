package daemon

import (
	"time"

	"github.com/pgdr/pgdr/agent/watchdog"
)

// The wiring of agent/watchdog: its construction, the lease as it reads
// it, and thin adapters for the callers in this package (the lease loop,
// the coordinator session, the promoter), which the next step of issue 15
// removes.

// newWatchdog builds the process watchdog's parent side (off until
// EnableWatchdog) and the promotion guard, reading the lease through
// watchdogLease and the clocks through readClocks.
func (d *Daemon) newWatchdog() (*watchdog.Watchdog, *watchdog.Guard) {
	w := d.cfg.Failover.Watchdog
	wd := watchdog.New(watchdog.Config{
		Enabled:      w == nil || *w,
		SafetyMargin: d.safetyMargin(),
		PIDPath:      d.cfg.Agent.Socket + ".watchdog.pid",
	}, watchdog.Deps{
		Lease:    watchdogLease{d},
		Epoch:    func() uint64 { return d.epoch.Current() },
		Reported: func() bool { return d.Latest() != nil },
		Clocks:   d.readClocks,
		Log:      d.log,
	})
	return wd, watchdog.NewGuard(watchdog.GuardConfig{PGData: d.cfg.Postgres.PGData, BootID: d.bootID}, wd, d.log)
}

// watchdogLease is the lease as the watchdog reads it (watchdog.Lease):
// none without coordinator.addresses.
type watchdogLease struct{ d *Daemon }

func (l watchdogLease) Exists() bool { return l.d.leaseEnabled() }

func (l watchdogLease) Granted() bool { return l.d.leaseGranted() }

// EnableWatchdog makes Run start argv (`pgdr-agent watchdog --config F`,
// with the agent's executable) as the watchdog when failover.watchdog is
// on and coordinators are configured.
func (d *Daemon) EnableWatchdog(argv []string) { d.wd.Enable(argv) }

// Clocks is the clocks' reading give-up times are judged on (d.clocks).
type Clocks = watchdog.Clocks

// readClocks is watchdog.ReadClocks, or the tests' clocks (d.clocks).
func (d *Daemon) readClocks() Clocks {
	if d.clocks != nil {
		return d.clocks()
	}
	return watchdog.ReadClocks()
}

// bootID is this boot's id: of /proc/sys/kernel/random/boot_id, or of the
// tests' d.bootIDPath.
func (d *Daemon) bootID() string { return watchdog.ReadBootID(d.bootIDPath) }

// giveUpTime is watchdog.GiveUpTime with the method names the promoter
// calls.
type giveUpTime struct{ watchdog.GiveUpTime }

func giveUpAfter(c Clocks, left, leftWall time.Duration) giveUpTime {
	return giveUpTime{watchdog.GiveUpAfter(c, left, leftWall)}
}

func (g giveUpTime) isZero() bool            { return g.IsZero() }
func (g giveUpTime) passed(c Clocks) bool    { return g.Passed(c) }
func (g giveUpTime) after(o giveUpTime) bool { return g.After(o.GiveUpTime) }

// Adapters for the lease loop, the coordinator session and the promoter.

func (d *Daemon) watchdogBeat(deadline time.Time) { d.wd.Beat(deadline) }
func (d *Daemon) watchdogEnabled() bool           { return d.wd.Enabled() }
func (d *Daemon) guardPromotion(epoch uint64, giveUp giveUpTime) error {
	return d.guard.Guard(epoch, giveUp.GiveUpTime)
}
func (d *Daemon) unguardPromotion() { d.guard.Unguard() }

// resumePendingPromotion resumes the guard of a promotion that a previous
// agent process left in pgdata: its watcher fences the node at the
// give-up time unless a lease is granted by then (at once when it passed).
func (d *Daemon) resumePendingPromotion() {
	if epoch, giveUp, ok := d.guard.Resume(); ok {
		d.watchPromotion(epoch, giveUpTime{giveUp}, func() {})
	}
}
