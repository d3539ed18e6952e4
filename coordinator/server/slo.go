package server

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/coordinator/slo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The write-availability SLO on the leader (coordinator/slo, docs/slo.md):
// every report of a heartbeat writer stores one value, the newest
// heartbeat commit of its cluster placed on the leader's clock
// (heartbeats.observe); once a second sloTick judges every cluster from
// it, and once a wall-clock minute the judged seconds of all clusters go
// to Raft in one RecordWriteSeconds. Seconds this leader did not judge
// (before its first report of a cluster, a stalled tick, a leader change)
// are counted good when the writer's unbroken run of heartbeats covers
// them (heartbeat_run_ms), else bad and unobserved, when the next batch
// is applied.

const (
	// sloFeatureLevel: the voters know RecordWriteSeconds.
	sloFeatureLevel = 3
	// sloCatchUp: a tick late by more than this judges only the latest
	// seconds; the rest become an unobserved gap.
	sloCatchUp = 5
)

// heartbeatSeen is a cluster's newest heartbeat commit as the leader
// places it: the report's arrival minus the heartbeat's age when sampled
// (on the writer's own clock, so neither host's clock skew enters), and
// the writer's interval.
type heartbeatSeen struct {
	at       time.Time
	interval time.Duration
	// runSince: the first commit of the writer's unbroken run of
	// heartbeats up to at, on the leader's clock (zero: not known).
	runSince time.Time
}

// heartbeats holds, per cluster, the newest heartbeat seen by this leader.
type heartbeats struct {
	mu     sync.Mutex
	newest map[string]heartbeatSeen
}

func newHeartbeats() *heartbeats { return &heartbeats{newest: map[string]heartbeatSeen{}} }

// observe keeps r's heartbeat if it is its cluster's newest (reports of
// heartbeat writers only: a replica's replayed row is for the lag). A
// writable server whose agent writes no heartbeat (heartbeat disabled)
// stops its cluster's judgement.
func (h *heartbeats) observe(r *pgdrv1.HealthReport, now time.Time) {
	iv := r.GetHeartbeatIntervalMs()
	if iv <= 0 {
		if r.GetConnectable() && !r.GetInRecovery() && !r.GetRecoveryUnknown() && !r.GetFenced() {
			h.mu.Lock()
			delete(h.newest, r.GetCluster())
			h.mu.Unlock()
		}
		return
	}
	if r.GetHeartbeatTime() == nil {
		return
	}
	at := now.Add(-time.Duration(max(r.GetHeartbeatAgeMs(), 0)) * time.Millisecond)
	h.mu.Lock()
	if cur, ok := h.newest[r.GetCluster()]; !ok || at.After(cur.at) {
		hs := heartbeatSeen{at: at, interval: time.Duration(iv) * time.Millisecond}
		if run := r.GetHeartbeatRunMs(); run > 0 {
			hs.runSince = at.Add(-time.Duration(run) * time.Millisecond)
		}
		h.newest[r.GetCluster()] = hs
	}
	h.mu.Unlock()
}

func (h *heartbeats) reset() {
	h.mu.Lock()
	h.newest = map[string]heartbeatSeen{}
	h.mu.Unlock()
}

func (h *heartbeats) snapshot() map[string]heartbeatSeen {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]heartbeatSeen, len(h.newest))
	for k, v := range h.newest {
		out[k] = v
	}
	return out
}

// sloJudge is one leadership's judgement: the trackers, the last second
// judged and the minute's batch not yet sent.
type sloJudge struct {
	trackers map[string]slo.Tracker
	last     int64 // the last judged second [last, last+1), Unix seconds
	batch    *sloBatch
	// notReady: the feature-level gate's last refusal (logged once).
	notReady string
}

type sloBatch struct {
	minute   int64
	to       int64
	clusters map[string]*sloCount
}

type sloCount struct {
	good, bad int
	first     int64
	// runSince: see ClusterWriteSeconds.run_since_unix (0: not known).
	runSince int64
}

// sloLoop judges every cluster once a second while this node leads.
func (s *Server) sloLoop(ctx context.Context) {
	j := &sloJudge{trackers: map[string]slo.Tracker{}, last: time.Now().Unix() - 1}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sloTick(ctx, j, time.Now())
		}
	}
}

// sloTick judges the seconds ended since the last tick (at most
// sloCatchUp) and sends the batch of a minute that ended.
func (s *Server) sloTick(ctx context.Context, j *sloJudge, now time.Time) {
	sec := now.Unix() - 1
	if sec <= j.last {
		return
	}
	from := max(j.last+1, sec-sloCatchUp+1)
	seen := s.heartbeats.snapshot()
	for x := from; x <= sec; x++ {
		if j.batch != nil && x/60 != j.batch.minute {
			s.sendWriteSeconds(ctx, j, j.batch)
			j.batch = nil
		}
		if j.batch == nil {
			j.batch = &sloBatch{minute: x / 60, clusters: map[string]*sloCount{}}
		}
		for cluster, hs := range seen {
			tr, v := slo.Judge(j.trackers[cluster], hs.at, now, hs.interval)
			j.trackers[cluster] = tr
			c := j.batch.clusters[cluster]
			if c == nil {
				c = &sloCount{first: x}
				if !hs.runSince.IsZero() {
					// The first whole second of the run, at most the batch's first.
					c.runSince = min(hs.runSince.Add(time.Second-1).Unix(), x)
				}
				j.batch.clusters[cluster] = c
			}
			c.good += v.Good
			c.bad += v.Bad
		}
		j.batch.to = x + 1
	}
	j.last = sec
}

// writeSecondsCommand is a batch as the command that records it: each
// cluster's counts clamped to the seconds it was judged in the batch (a
// gap's correction may reach back into the previous minute's batch).
func writeSecondsCommand(b *sloBatch) *pgdrv1.RecordWriteSeconds {
	out := &pgdrv1.RecordWriteSeconds{FromUnix: b.minute * 60, ToUnix: b.to}
	names := make([]string, 0, len(b.clusters))
	for n := range b.clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := b.clusters[n]
		secs := int(b.to - c.first)
		bad := min(max(c.bad, 0), secs)
		good := min(max(c.good, 0), secs-bad)
		out.Clusters = append(out.Clusters, &pgdrv1.ClusterWriteSeconds{Cluster: n, Good: uint32(good), Bad: uint32(bad), FirstUnix: c.first, RunSinceUnix: c.runSince})
	}
	return out
}

// sendWriteSeconds commits a batch; once every voter knows the command.
func (s *Server) sendWriteSeconds(ctx context.Context, j *sloJudge, b *sloBatch) {
	if len(b.clusters) == 0 {
		return
	}
	if ok, why := votersReadyFor(s.cfg.Name, s.voters(), s.featureLevels(), sloFeatureLevel, "write-availability seconds"); !ok {
		if why != j.notReady {
			s.log.Warn("write-availability seconds not recorded", "reason", why)
			j.notReady = why
		}
		return
	}
	j.notReady = ""
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RECORD_WRITE_SECONDS, writeSecondsCommand(b), "coordinator:"+s.cfg.Name, time.Now())
	if err != nil {
		s.log.Error("write-availability seconds not recorded", "err", err)
		return
	}
	cmd.IgnoreIfUnknown = true
	if _, err := s.proposeCommand(ctx, cmd); err != nil {
		s.log.Warn("write-availability seconds not recorded", "minute", time.Unix(b.minute*60, 0).UTC(), "err", err)
	}
}

// writeAvailability is cluster c's SLO for status and the report: the
// recorded seconds, the budget against its target, and the replication
// lag of each member but the primary measured from the heartbeats in its
// fresh samples.
func (s *Server) writeAvailability(c *pgdrv1.Cluster, samples map[memberKey]sample, now time.Time) *pgdrv1.WriteAvailability {
	target := policy.EffectiveTargets(c).WriteAvailability()
	out := &pgdrv1.WriteAvailability{WindowSeconds: int64(slo.Window / time.Second), Target: target, Ratio: 1, BudgetRemaining: 1}
	if ws, ok := s.fsm.WriteSecondsOf(c.GetName(), now); ok {
		out.GoodSeconds, out.BadSeconds, out.UnobservedSeconds = ws.Window.Good, ws.Window.Bad, ws.Window.Unobserved
		out.GoodTotal, out.BadTotal = ws.Good, ws.Bad
		out.RecordedThrough = timestamppb.New(ws.Through)
		out.Ratio, out.BudgetRemaining = slo.Budget(ws.Window, target)
	}
	// Samples older than the staleness limit (a dead member's last
	// report) say nothing of its lag now.
	fresh := func(k memberKey, sm sample) bool {
		return k.cluster == c.GetName() && sm.report.GetHeartbeatTime() != nil &&
			(s.cfg == nil || s.cfg.Health.StaleAfter.Duration <= 0 || now.Sub(sm.at) <= s.cfg.Health.StaleAfter.Duration)
	}
	var newest time.Time
	for k, sm := range samples {
		if fresh(k, sm) && sm.report.GetHeartbeatTime().AsTime().After(newest) {
			newest = sm.report.GetHeartbeatTime().AsTime()
		}
	}
	if newest.IsZero() {
		return out
	}
	out.LastHeartbeat = timestamppb.New(newest)
	for k, sm := range samples {
		// The primary is where the heartbeat is written: its report may
		// carry an older one than a replica sampled later, not a lag.
		if fresh(k, sm) && k.node != c.GetPrimary() {
			out.Lag = append(out.Lag, &pgdrv1.HeartbeatLag{Node: k.node, Seconds: newest.Sub(sm.report.GetHeartbeatTime().AsTime()).Seconds()})
		}
	}
	sort.Slice(out.Lag, func(i, j int) bool { return out.Lag[i].Node < out.Lag[j].Node })
	return out
}

// SLO metrics, from the replicated seconds; the leader alone exports them
// (a follower's state may lag), so that one series per cluster exists.
var (
	descWriteAvailability = prometheus.NewDesc("pgdr_cluster_write_availability_ratio",
		"Share of the judged seconds of the last 28 days with a committed write-availability heartbeat (docs/slo.md).", []string{"cluster"}, nil)
	descErrorBudget = prometheus.NewDesc("pgdr_cluster_error_budget_remaining_ratio",
		"Share of the 28-day write-availability error budget ((1 - target) * 28 days) not yet spent; negative once overspent.", []string{"cluster"}, nil)
	descWriteSeconds = prometheus.NewDesc("pgdr_cluster_write_seconds_total",
		"Seconds judged for write availability since the cluster was first judged, by result (bad includes seconds no leader judged); for burn rates over rate() windows.",
		[]string{"cluster", "result"}, nil)
	descWriteTarget = prometheus.NewDesc("pgdr_cluster_write_availability_target_ratio",
		"The cluster's write-availability target (targets.write_availability).", []string{"cluster"}, nil)
)

type sloCollector struct{ s *Server }

func (c sloCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWriteAvailability, descErrorBudget, descWriteSeconds, descWriteTarget} {
		ch <- d
	}
}

func (c sloCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.s.isLeader() {
		return
	}
	now := time.Now()
	c.s.fsm.ScanWriteSeconds(now, func(cluster string, ws fsm.WriteSeconds, cl *pgdrv1.Cluster) {
		target := policy.EffectiveTargets(cl).WriteAvailability()
		ratio, left := slo.Budget(ws.Window, target)
		ch <- prometheus.MustNewConstMetric(descWriteAvailability, prometheus.GaugeValue, ratio, cluster)
		ch <- prometheus.MustNewConstMetric(descErrorBudget, prometheus.GaugeValue, left, cluster)
		ch <- prometheus.MustNewConstMetric(descWriteTarget, prometheus.GaugeValue, target, cluster)
		ch <- prometheus.MustNewConstMetric(descWriteSeconds, prometheus.CounterValue, float64(ws.Good), cluster, "good")
		ch <- prometheus.MustNewConstMetric(descWriteSeconds, prometheus.CounterValue, float64(ws.Bad), cluster, "bad")
	})
}
