package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pgdr/pgdr/coordinator/slots"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Slot keeping: how often the leader looks, how long an unused managed
// slot must have been seen unused before any drop, how long it waits for
// an agent's answer and before ordering the same drop again.
const (
	slotTick        = 5 * time.Second
	slotGrace       = time.Minute
	slotDropTimeout = 30 * time.Second
	slotRetry       = time.Minute
)

type slotKey struct{ cluster, server, name string }

// slotKeeper drops the pgdr-managed replication slots coordinator/slots
// decides on. It lives for one leadership: the times it saw slots unused
// start again with the next leader, which therefore never drops sooner.
type slotKeeper struct {
	s      *Server
	mu     sync.Mutex
	unused map[slotKey]time.Time // first seen unused, in the current run
	tried  map[slotKey]time.Time // last drop order
}

// slotLoop runs while this node leads.
func (s *Server) slotLoop(ctx context.Context) {
	if s.cfg.Slots.Disabled {
		return
	}
	k := &slotKeeper{s: s, unused: map[slotKey]time.Time{}, tried: map[slotKey]time.Time{}}
	t := time.NewTicker(slotTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, cluster := range k.round(time.Now()) {
			for _, d := range cluster.drops {
				k.drop(ctx, cluster.name, cluster.epoch, d)
			}
		}
	}
}

type clusterDrops struct {
	name  string
	epoch uint64
	drops []slots.Drop
}

// round updates the unused-since times from the fresh reports and returns
// what to drop in each cluster.
func (k *slotKeeper) round(now time.Time) []clusterDrops {
	k.mu.Lock()
	defer k.mu.Unlock()
	stale := k.s.cfg.Health.StaleAfter.Duration
	seen := map[slotKey]bool{}
	var out []clusterDrops
	for name, c := range k.s.fsm.Clusters() {
		v := slots.View{Now: now, DropAfter: k.s.cfg.Slots.DropInactiveAfter.Duration,
			MaxRetained: k.s.cfg.Slots.MaxRetainedBytes, Grace: slotGrace}
		for m := range c.GetMembers() {
			v.Members = append(v.Members, m)
		}
		samples := k.s.view.snapshotCluster(name)
		v.Receivers = map[string]string{}
		for mk, sm := range samples { // stale reports too: a receiver that is down keeps its slot's owner
			if rs := sm.report.GetReceiverSlot(); rs != "" {
				v.Receivers[rs] = mk.node
			}
		}
		for mk, sm := range samples {
			r := sm.report
			if now.Sub(sm.at) > stale || !r.GetReplicationSlotsKnown() || r.GetRecoveryUnknown() {
				continue
			}
			primary := c.GetPrimary() == mk.node && !r.GetInRecovery()
			for _, rs := range r.GetReplicationSlots() {
				if rs.GetType() != "physical" || !slots.Managed(rs.GetName()) {
					continue
				}
				key := slotKey{name, mk.node, rs.GetName()}
				seen[key] = true
				if rs.GetActive() {
					delete(k.unused, key)
					continue
				}
				since, ok := k.unused[key]
				if !ok {
					since = now
					k.unused[key] = since
				}
				if t, ok := k.tried[key]; ok && now.Sub(t) < slotRetry {
					continue
				}
				v.Slots = append(v.Slots, slots.Slot{Server: mk.node, Primary: primary, Name: rs.GetName(),
					Retained: rs.GetRetainedBytes(), UnusedSince: since})
			}
		}
		if d := slots.Decide(v); len(d) > 0 {
			out = append(out, clusterDrops{name: name, epoch: c.GetEpoch(), drops: d})
			for _, x := range d {
				k.tried[slotKey{name, x.Server, x.Name}] = now
			}
		}
	}
	for key := range k.unused {
		if !seen[key] {
			delete(k.unused, key)
		}
	}
	for key, t := range k.tried {
		if now.Sub(t) >= slotRetry {
			delete(k.tried, key)
		}
	}
	return out
}

// drop orders the slot's server to drop it and records the drop.
func (k *slotKeeper) drop(ctx context.Context, cluster string, epoch uint64, d slots.Drop) {
	cmd := &pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_DropSlot{DropSlot: &pgdrv1.DropSlot{Name: d.Name, Reason: d.Reason}}}
	out, err := k.s.order(ctx, cluster, d.Server, epoch, cmd, slotDropTimeout)
	if err != nil {
		k.s.log.Warn("dropping a replication slot failed; tried again later", "cluster", cluster, "node", d.Server, "slot", d.Name, "reason", d.Reason, "err", err)
		return
	}
	k.mu.Lock()
	delete(k.unused, slotKey{cluster, d.Server, d.Name})
	k.mu.Unlock()
	if strings.Contains(out, "already gone") {
		k.s.log.Info("replication slot already gone", "cluster", cluster, "node", d.Server, "slot", d.Name)
		return
	}
	k.s.log.Info("replication slot dropped", "cluster", cluster, "node", d.Server, "slot", d.Name, "reason", d.Reason, "output", out)
	k.s.recordEvent(ctx, cluster, "slot_dropped", d.Server, epoch,
		fmt.Sprintf("replication slot %s dropped on %s: %s", d.Name, d.Server, d.Reason),
		map[string]string{"slot": d.Name, "reason": d.Reason})
}
