package server

import (
	"context"
	"sync"
	"time"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The primary's last known LSN is what maximum_lag_on_failover is judged
// against. A report from an agent whose PostgreSQL is down carries no LSN,
// so the latest report cannot be it: the leader keeps, per cluster, the
// highest LSN the recorded primary reported while writable at the current
// epoch, and a report without one never lowers it.
//
// A new leader's view starts empty, so the position is also replicated: the
// leader writes it to Raft (RecordPrimaryLSN) when the epoch's first one is
// seen, then at most every primaryLSNInterval while it advances, or after
// primaryLSNMinInterval when it advanced by half the lag limit. The log gets
// at most one entry per second per cluster (one per primaryLSNInterval while
// writes flow at a normal rate, none while idle), and the state holds one
// number per cluster. A new leader therefore knows a position at most
// max(primaryLSNInterval of WAL, half the lag limit) behind the last one
// its predecessor saw; a replica within the limit of that floor is promoted
// as before, one further behind is refused. Recovering the position from
// the replicas instead (their walreceiver's latest_end_lsn) would not be
// safe: a replica cut off from the primary, the case the limit is for,
// knows nothing of what the primary wrote since.
const (
	primaryLSNInterval    = 5 * time.Second
	primaryLSNMinInterval = time.Second
)

// primaryPos is one cluster's recorded primary position in leader memory.
type primaryPos struct {
	primary string
	epoch   uint64
	lsn     uint64
	// written: the LSN this leader last wrote to Raft for this epoch, and when.
	written   uint64
	writtenAt time.Time
}

// primaryLSNs is the leader's highest LSN seen per cluster's primary.
type primaryLSNs struct {
	mu sync.Mutex
	m  map[string]primaryPos
}

func newPrimaryLSNs() *primaryLSNs { return &primaryLSNs{m: map[string]primaryPos{}} }

// observe raises cluster's known position of primary at epoch to lsn.
func (p *primaryLSNs) observe(cluster, primary string, epoch, lsn uint64) {
	if lsn == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.m[cluster]
	if !ok || cur.primary != primary || cur.epoch != epoch {
		p.m[cluster] = primaryPos{primary: primary, epoch: epoch, lsn: lsn}
		return
	}
	if lsn > cur.lsn {
		cur.lsn = lsn
		p.m[cluster] = cur
	}
}

// get returns the position seen of primary at epoch (0: none).
func (p *primaryLSNs) get(cluster, primary string, epoch uint64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.m[cluster]; ok && cur.primary == primary && cur.epoch == epoch {
		return cur.lsn
	}
	return 0
}

// due returns the LSN to write to Raft for c now, or 0 when nothing is due.
// recorded is what the state already holds for c's epoch (0: none).
func (p *primaryLSNs) due(c *pgdrv1.Cluster, recorded, maxLag uint64, now time.Time) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.m[c.GetName()]
	if !ok || cur.primary != c.GetPrimary() || cur.epoch != c.GetEpoch() || cur.lsn <= recorded {
		return 0
	}
	since := now.Sub(cur.writtenAt)
	switch {
	case recorded == 0 && since >= primaryLSNMinInterval, // the epoch's first: at once
		since >= primaryLSNInterval,
		since >= primaryLSNMinInterval && cur.lsn-max(recorded, cur.written) >= maxLag/2:
		return cur.lsn
	}
	return 0
}

// wrote notes that lsn was written for cluster at now.
func (p *primaryLSNs) wrote(cluster string, lsn uint64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.m[cluster]; ok {
		cur.written, cur.writtenAt = lsn, now
		p.m[cluster] = cur
	}
}

// ingestReport takes one agent report into the leader's view and, when it
// comes from the recorded primary running writable, into the primary's
// known position. A report whose recovery state could not be read is kept
// as not connectable: nothing may take it for a writable server (a primary
// to fail over from, a stray writable node to rejoin) nor for a replica.
// The report was sampled after the command it names went out, when this
// leader sent it (echo.go); when it was received says nothing of that.
func (s *Server) ingestReport(r *pgdrv1.HealthReport, now time.Time) {
	if r.GetRecoveryUnknown() {
		r.Connectable = false
	}
	s.view.put(r, now, s.hub.sent.at(memberKey{r.GetCluster(), r.GetNode()}, r.GetAfterCommandId()))
	s.heartbeats.observe(r, now)
	if !r.GetConnectable() || r.GetInRecovery() || r.GetCurrentLsn() == 0 {
		return
	}
	if _, primary, epoch := s.fsm.MemberEpoch(r.GetCluster(), r.GetNode()); primary == r.GetNode() {
		s.primaryLSN.observe(r.GetCluster(), primary, epoch, r.GetCurrentLsn())
	}
}

// primaryLastLSN is c's primary's last known LSN at c's epoch: the higher
// of what this leader saw and what Raft holds (0: unknown).
func (s *Server) primaryLastLSN(c *pgdrv1.Cluster) uint64 {
	lsn := s.primaryLSN.get(c.GetName(), c.GetPrimary(), c.GetEpoch())
	if c.GetPrimaryLastLsnEpoch() == c.GetEpoch() && c.GetPrimary() != "" {
		lsn = max(lsn, c.GetPrimaryLastLsn())
	}
	return lsn
}

// primaryLSNSeed is the LSN floor of the epoch at which cand replaces c's
// primary: the higher of cand's position (its received WAL, a point its
// timeline has passed) and the old primary's last known LSN. It travels in
// the SetPrimary that records cand (the applier raises it to the state's
// old floor too), so that a leader change before cand's first report as a
// primary does not leave the lag limit without a floor ("unknown").
func (s *Server) primaryLSNSeed(c *pgdrv1.Cluster, cand string) uint64 {
	seed := s.primaryLastLSN(c)
	if sm, ok := s.view.get(memberKey{c.GetName(), cand}); ok {
		seed = max(seed, sm.report.GetReceiveLsn(), sm.report.GetReplayLsn())
	}
	return seed
}

// recordPrimaryLSNs writes the primaries' positions that are due to Raft
// (at most one proposal per cluster per primaryLSNMinInterval); the leader
// loop calls it every tick.
func (s *Server) recordPrimaryLSNs(ctx context.Context) {
	now := time.Now()
	// Only the few fields read here are copied, not the clusters.
	type primaryOf struct {
		c                *pgdrv1.Cluster // name, primary and epoch only
		recorded, maxLag uint64
	}
	var clusters []primaryOf
	s.fsm.Read(func(st *pgdrv1.State) {
		for name, c := range st.GetClusters() {
			if c.GetPrimary() == "" {
				continue
			}
			p := primaryOf{c: &pgdrv1.Cluster{Name: name, Primary: c.GetPrimary(), Epoch: c.GetEpoch()}, maxLag: c.GetPolicy().GetMaximumLagOnFailover()}
			if c.GetPrimaryLastLsnEpoch() == c.GetEpoch() {
				p.recorded = c.GetPrimaryLastLsn()
			}
			clusters = append(clusters, p)
		}
	})
	for _, p := range clusters {
		c, name, recorded, maxLag := p.c, p.c.GetName(), p.recorded, p.maxLag
		if maxLag == 0 {
			maxLag = failover.DefaultMaxLag
		}
		lsn := s.primaryLSN.due(c, recorded, maxLag, now)
		if lsn == 0 {
			continue
		}
		cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{
			Cluster: name, Primary: c.GetPrimary(), Epoch: c.GetEpoch(), Lsn: lsn,
		}, "coordinator:"+s.cfg.Name, now)
		if err != nil {
			s.log.Error("encoding the primary's LSN", "cluster", name, "err", err)
			continue
		}
		// Optional for a coordinator that does not know it yet: it only
		// loses the floor a new leader would judge the lag against.
		cmd.IgnoreIfUnknown = true
		// Noted before the outcome: a failure is retried after the interval,
		// not on every tick. The commit is not waited for here, so that many
		// clusters do not hold up the failover judgement of this tick.
		s.primaryLSN.wrote(name, lsn, now)
		go func() {
			if _, err := s.proposeCommand(ctx, cmd); err != nil && ctx.Err() == nil {
				s.log.Warn("recording the primary's LSN", "cluster", name, "primary", c.GetPrimary(),
					"epoch", c.GetEpoch(), "lsn", failover.FormatLSN(lsn), "err", err)
			}
		}()
	}
}
