package daemon

import (
	"github.com/pgdr/pgdr/agent/failsafe"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// newFailsafe builds the agent's failsafe (agent/failsafe) from the
// configuration, reading the lease l.
func (d *Daemon) newFailsafe(l failsafe.Lease) *failsafe.Failsafe {
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
		Lease:  l,
		Fence:  d.fence,
		Epoch:  func() uint64 { return d.epoch.Current() },
		Report: d.Latest,
		Log:    d.log,
	})
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
