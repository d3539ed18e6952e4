package daemon

import (
	"time"

	"github.com/pgdr/pgdr/agent/failsafe"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// newFailsafe builds the agent's failsafe (agent/failsafe) from the
// configuration, reading the lease through failsafeLease.
func (d *Daemon) newFailsafe() *failsafe.Failsafe {
	f := d.cfg.Failover.Failsafe
	return failsafe.New(failsafe.Config{
		Cluster:      d.cfg.Cluster,
		Node:         d.cfg.Node.Name,
		Enabled:      (f == nil || *f) && d.cfg.Gossip.KeyFile != "",
		KeyFile:      d.cfg.Gossip.KeyFile,
		Socket:       d.cfg.Agent.Socket,
		LeaseTTL:     d.leaseTTL(),
		SafetyMargin: d.safetyMargin(),
		Loop:         d.loopInterval(),
	}, failsafe.Deps{
		Lease:  failsafeLease{d},
		Fence:  d.fence,
		Epoch:  func() uint64 { return d.epoch.Current() },
		Report: d.Latest,
		Log:    d.log,
	})
}

// failsafeLease is the lease as the failsafe reads it (failsafe.Lease):
// d.lease under leaseMu; without a lease (no coordinators) it serves and
// reports nothing granted.
type failsafeLease struct{ d *Daemon }

func (l failsafeLease) Serving(now time.Time) (bool, string) {
	l.d.leaseMu.Lock()
	defer l.d.leaseMu.Unlock()
	if l.d.lease == nil {
		return true, ""
	}
	return l.d.lease.Serving(now)
}

func (l failsafeLease) Status() (granted bool, fenced string, deadline time.Time) {
	l.d.leaseMu.Lock()
	defer l.d.leaseMu.Unlock()
	if l.d.lease == nil {
		return false, "", time.Time{}
	}
	return l.d.lease.Granted(), l.d.lease.Fenced(), l.d.lease.Deadline()
}

// apiURL is where other agents and the coordinators reach this agent's
// HTTP server: health.advertise, else health.listen.
func (d *Daemon) apiURL() string {
	a := d.cfg.Health.Advertise
	if a == "" {
		a = d.cfg.Health.Listen
	}
	if a == "" {
		return ""
	}
	return "http://" + a
}

// leaderDialAddress is where to dial the leader: coordinator.leader_addresses
// overrides its advertised address.
func (d *Daemon) leaderDialAddress(resp *pgdrv1.LeaderResponse) string {
	if a := d.cfg.Coordinator.LeaderAddresses[resp.GetName()]; a != "" {
		return a
	}
	return resp.GetApiAddress()
}
