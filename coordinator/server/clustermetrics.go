package server

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Per-cluster metrics, computed at scrape time from what the leader
// already keeps: the replicated state (with its totals, counted as
// commands apply, so that the counters never go backwards when the leader
// changes), the latest reports and the latest compliance measurement. No
// history is read. A follower, or a leader that has not caught up with the
// log (its state may lack the previous leader's last entries), serves none
// of them (and 0 healthy and unhealthy members).
var (
	descMembersHealthy   = prometheus.NewDesc("pgdr_coordinator_members_healthy", "Members judged healthy (leader only).", nil, nil)
	descMembersUnhealthy = prometheus.NewDesc("pgdr_coordinator_members_unhealthy", "Members judged unhealthy (leader only).", nil, nil)
	descClusterMembers   = prometheus.NewDesc("pgdr_cluster_members", "Members of the cluster by health (healthy, unhealthy).", []string{"cluster", "state"}, nil)
	descCandidates       = prometheus.NewDesc("pgdr_cluster_failover_candidates",
		"Healthy replicas the failover decision would accept if the primary were lost now.", []string{"cluster"}, nil)
	descEpoch        = prometheus.NewDesc("pgdr_cluster_primary_epoch", "Epoch of the recorded primary.", []string{"cluster"}, nil)
	descPaused       = prometheus.NewDesc("pgdr_cluster_paused", "1 while automatic failover is paused.", []string{"cluster"}, nil)
	descChanges      = prometheus.NewDesc("pgdr_cluster_primary_changes_total", "Completed failovers and switchovers (from the replicated totals).", []string{"cluster", "kind"}, nil)
	descChangeTime   = prometheus.NewDesc("pgdr_cluster_primary_change_duration_seconds", "Measured duration (detection or request to writable) of the newest failover / switchover.", []string{"cluster", "kind"}, nil)
	descTierInterval = prometheus.NewDesc("pgdr_backup_tier_interval_seconds",
		"The tier's schedule interval (the longest gap between two of its cron times over the next cycle).", []string{"cluster", "tier"}, nil)
	descBackupRuns = prometheus.NewDesc("pgdr_backup_runs_total",
		"Scheduled and manual backup runs ended, by result (from the replicated run records).", []string{"cluster", "tier", "result"}, nil)
	descBackupLastOK  = prometheus.NewDesc("pgdr_backup_last_success_timestamp_seconds", "End of the newest successful run of the tier the coordinators recorded.", []string{"cluster", "tier"}, nil)
	descDrillInterval = prometheus.NewDesc("pgdr_drill_interval_seconds", "The drill schedule's interval (absent without a drill schedule).", []string{"cluster"}, nil)
)

// intervalRefresh: how long a schedule's interval is reused before it is
// computed again from the scrape's time (a DST change moves it).
const intervalRefresh = time.Hour

type clusterCollector struct {
	s *Server
	// intervals caches each schedule's interval (policy.Interval costs up
	// to 400 cron steps); only the schedules of the latest scrape are kept.
	mu        sync.Mutex
	intervals map[scheduleKey]cachedInterval
}

type scheduleKey struct{ schedule, tz string }

type cachedInterval struct {
	d   time.Duration
	err error
	at  time.Time
}

func newClusterCollector(s *Server) *clusterCollector {
	return &clusterCollector{s: s, intervals: map[scheduleKey]cachedInterval{}}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembersHealthy, descMembersUnhealthy, descClusterMembers, descCandidates, descEpoch, descPaused,
		descChanges, descChangeTime, descTierInterval, descBackupRuns, descBackupLastOK, descDrillInterval} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if !s.caughtUpLeader() {
		ch <- prometheus.MustNewConstMetric(descMembersHealthy, prometheus.GaugeValue, 0)
		ch <- prometheus.MustNewConstMetric(descMembersUnhealthy, prometheus.GaugeValue, 0)
		return
	}
	now := time.Now()
	samples, gossip, last := s.view.snapshot(), s.gossipStates(), s.lastCompliance()
	var clusters []scrapeCluster
	s.fsm.Read(func(st *pgdrv1.State) { clusters = scrapeClusters(st) })
	for _, m := range c.collect(clusters, samples, gossip, last, now) {
		ch <- m
	}
}

// scrapeCluster is what the metrics read of one cluster, copied out of
// the state under its lock.
type scrapeCluster struct {
	// cluster holds the fields status and the failover judgement read:
	// scalars and the policy copied, the members map copied (the state
	// replaces a member's record on a change, never edits it).
	cluster *pgdrv1.Cluster
	totals  *pgdrv1.ClusterTotals
	policy  policy.Policy
	// lastOK: each tier's newest successful run's end, from the totals and
	// the run records (runs recorded before the totals were counted).
	lastOK map[string]time.Time
}

// scrapeClusters copies what the metrics read of every cluster of st; it
// runs under the FSM's read lock, so it copies no more than that: not the
// history, the run records or the members' records.
func scrapeClusters(st *pgdrv1.State) []scrapeCluster {
	out := make([]scrapeCluster, 0, len(st.GetClusters()))
	for _, cl := range st.GetClusters() {
		sc := scrapeCluster{cluster: &pgdrv1.Cluster{
			Name: cl.GetName(), Primary: cl.GetPrimary(), Epoch: cl.GetEpoch(),
			SyncStandbys: slices.Clone(cl.GetSyncStandbys()), SyncQuorum: cl.GetSyncQuorum(),
			PrimaryLastLsn: cl.GetPrimaryLastLsn(), PrimaryLastLsnEpoch: cl.GetPrimaryLastLsnEpoch(),
			Members: maps.Clone(cl.GetMembers()),
		}}
		if cl.GetPolicy() != nil {
			sc.cluster.Policy = proto.Clone(cl.GetPolicy()).(*pgdrv1.Policy)
		}
		sc.totals = &pgdrv1.ClusterTotals{}
		if cl.GetTotals() != nil {
			sc.totals = proto.Clone(cl.GetTotals()).(*pgdrv1.ClusterTotals)
		}
		sc.policy, _ = policy.Effective(cl)
		sc.lastOK = map[string]time.Time{}
		for _, tt := range sc.totals.GetBackupTiers() {
			if tt.GetLastSuccess() != nil {
				sc.lastOK[tt.GetTier()] = tt.GetLastSuccess().AsTime()
			}
		}
		for _, r := range cl.GetBackupRuns() {
			if at := r.GetFinishedAt().AsTime(); r.GetResult() == fsm.RunOK && r.GetFinishedAt() != nil && at.After(sc.lastOK[r.GetTier()]) {
				sc.lastOK[r.GetTier()] = at
			}
		}
		out = append(out, sc)
	}
	return out
}

// collect builds the metrics of clusters.
func (c *clusterCollector) collect(clusters []scrapeCluster, samples map[memberKey]sample, gossip map[string]string,
	last map[string]*pgdrv1.Compliance, now time.Time) []prometheus.Metric {
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...))
	}
	s := c.s
	st := &pgdrv1.State{Clusters: make(map[string]*pgdrv1.Cluster, len(clusters))}
	for _, sc := range clusters {
		st.Clusters[sc.cluster.GetName()] = sc.cluster
	}
	statuses := clusterStatus(statusInput{
		state: st, samples: samples, gossip: gossip,
		now: now, staleAfter: s.cfg.Health.StaleAfter.Duration, primaryLSN: s.primaryLSNs(st.GetClusters()),
	}, "")
	healthyAll, unhealthyAll := 0, 0
	for _, cs := range statuses {
		healthy := 0
		for _, m := range cs.GetMembers() {
			if m.GetHealthy() {
				healthy++
			}
		}
		unhealthy := len(cs.GetMembers()) - healthy
		healthyAll, unhealthyAll = healthyAll+healthy, unhealthyAll+unhealthy
		gauge(descClusterMembers, float64(healthy), cs.GetName(), "healthy")
		gauge(descClusterMembers, float64(unhealthy), cs.GetName(), "unhealthy")
	}
	gauge(descMembersHealthy, float64(healthyAll))
	gauge(descMembersUnhealthy, float64(unhealthyAll))

	seen := map[scheduleKey]bool{}
	for _, sc := range clusters {
		cl, name := sc.cluster, sc.cluster.GetName()
		in := s.membersInput(cl, samples, now)
		s.syncEligibility(cl, samples, &in) // no lease: every fresh position counts
		gauge(descCandidates, float64(len(failover.Candidates(in))), name)
		gauge(descEpoch, float64(cl.GetEpoch()), name)
		paused := 0.0
		if cl.GetPolicy().GetPaused() {
			paused = 1
		}
		gauge(descPaused, paused, name)

		counter(descChanges, sc.totals.GetFailovers(), name, compliance.SourceFailover)
		counter(descChanges, sc.totals.GetSwitchovers(), name, compliance.SourceSwitchover)
		for _, r := range last[name].GetRto() {
			if src := r.GetSource(); r.GetRecorded() && (src == compliance.SourceFailover || src == compliance.SourceSwitchover) {
				gauge(descChangeTime, r.GetSeconds(), name, src)
			}
		}
		for _, tt := range sc.totals.GetBackupTiers() {
			counter(descBackupRuns, tt.GetOk(), name, tt.GetTier(), fsm.RunOK)
			counter(descBackupRuns, tt.GetFailed(), name, tt.GetTier(), fsm.RunFailed)
			counter(descBackupRuns, tt.GetTimeout(), name, tt.GetTier(), fsm.RunTimeout)
			counter(descBackupRuns, tt.GetCancelled(), name, tt.GetTier(), fsm.RunCancelled)
			counter(descBackupRuns, tt.GetNotStarted(), name, tt.GetTier(), fsm.RunNotStarted)
		}
		for tier, at := range sc.lastOK {
			gauge(descBackupLastOK, float64(at.UnixMilli())/1000, name, tier)
		}
		for _, tier := range sc.policy.Tiers {
			if d, ok := c.interval(seen, tier.Schedule, tier.Timezone, now); ok {
				gauge(descTierInterval, d.Seconds(), name, tier.Name)
			}
		}
		if d := sc.policy.Drill; d != nil {
			if iv, ok := c.interval(seen, d.Schedule, d.Timezone, now); ok {
				gauge(descDrillInterval, iv.Seconds(), name)
			}
		}
	}
	c.mu.Lock()
	for k := range c.intervals {
		if !seen[k] {
			delete(c.intervals, k)
		}
	}
	c.mu.Unlock()
	return out
}

// interval is the schedule's interval (policy.Interval), cached for
// intervalRefresh; seen collects the schedules in use.
func (c *clusterCollector) interval(seen map[scheduleKey]bool, schedule, tz string, now time.Time) (time.Duration, bool) {
	k := scheduleKey{schedule, tz}
	seen[k] = true
	c.mu.Lock()
	defer c.mu.Unlock()
	ci, ok := c.intervals[k]
	if !ok || now.Sub(ci.at) >= intervalRefresh || now.Before(ci.at) {
		d, err := policy.Interval(schedule, tz, now)
		ci = cachedInterval{d: d, err: err, at: now}
		c.intervals[k] = ci
	}
	return ci.d, ci.err == nil
}

// primaryLSNs is each cluster's primary's last known LSN at its epoch.
func (s *Server) primaryLSNs(clusters map[string]*pgdrv1.Cluster) map[string]uint64 {
	out := make(map[string]uint64, len(clusters))
	for name, c := range clusters {
		out[name] = s.primaryLastLSN(c)
	}
	return out
}
