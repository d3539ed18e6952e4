package daemon

import "github.com/pgdr/pgdr/agent/watchdog"

// Test adapters for agent/watchdog (the tests of the whole daemon read the
// watchdog's heartbeat and the guard's record through them).

func (d *Daemon) watchdogHeartbeat() (watchdog.Heartbeat, bool) { return d.wd.Heartbeat() }
func (d *Daemon) promotePendingPath() string                    { return d.guard.Path() }
func monoNow() (int64, bool)                                    { return watchdog.MonoNow() }
