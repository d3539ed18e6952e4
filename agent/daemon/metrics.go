package daemon

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/repocopy"
	"github.com/pgdr/pgdr/pkg/buildinfo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// metrics is one daemon's Prometheus registry. Report-derived values are
// read from the latest report at scrape time, so a scrape never sees half
// of one round and half of another.
type metrics struct {
	reg           *prometheus.Registry
	checkDuration prometheus.Histogram
	coordinator   prometheus.Gauge
	fenced        prometheus.Gauge
	clockSkew     prometheus.Gauge
	labels        prometheus.Labels // cluster and node
	// labeled registers with the cluster and node labels.
	labeled prometheus.Registerer
	work    *workMetrics
	state   *stateCollector
}

// failsafeGauges are the failsafe state's values at scrape time.
type failsafeGauges func() (members, unverifiable int, active bool)

func newMetrics(cluster, node string, latest func() *pgdrv1.HealthReport, fs failsafeGauges) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	labeled := prometheus.WrapRegistererWith(prometheus.Labels{"cluster": cluster, "node": node}, reg)
	m := &metrics{
		reg:     reg,
		labels:  prometheus.Labels{"cluster": cluster, "node": node},
		labeled: labeled,
		checkDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgdr_agent_health_check_duration_seconds",
			Help:    "Duration of one round of local health checks.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		coordinator: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgdr_agent_coordinator_connected",
			Help: "1 while the agent's report stream to the coordinator leader is open.",
		}),
		fenced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgdr_agent_fenced",
			Help: "1 once this agent fenced its PostgreSQL (lease lost or fence order) until a rejoin.",
		}),
		clockSkew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgdr_agent_leader_clock_skew_seconds",
			Help: "This agent's clock minus the coordinator leader's, as last measured (an order's send time, with its transit, or the leader's answer before a promotion). Order deadlines do not depend on it; above 5 s the agent logs a warning.",
		}),
	}
	labeled.MustRegister(m.checkDuration, m.coordinator, m.fenced, m.clockSkew, &reportCollector{latest: latest}, buildinfo.Collector("pgdr-agent"))
	m.work = newWorkMetrics(labeled)
	if fs != nil {
		labeled.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pgdr_agent_failsafe_members",
				Help: "Other members of the cluster (recorded in Raft at the last granted renewal, or heard of through gossip) whose failsafe acknowledgement this node needs to serve as primary without the coordinators.",
			}, func() float64 { n, _, _ := fs(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pgdr_agent_failsafe_unverifiable_members",
				Help: "Of those, members whose failsafe key this node has not received from the coordinators (with a granted renewal): their acknowledgements cannot count, so failsafe cannot carry this primary past its lease until the next grant. Above 0 for more than a renewal or two means a member is not registered.",
			}, func() float64 { _, u, _ := fs(); return float64(u) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pgdr_agent_failsafe_active",
				Help: "1 while this primary serves past its lease on every member's failsafe acknowledgement (the coordinator leader unreachable).",
			}, func() float64 {
				if _, _, a := fs(); a {
					return 1
				}
				return 0
			}))
	}
	return m
}

// registerGate adds the commit gate's metrics (lease-gated commits on).
func (m *metrics) registerGate(stats func() commitgate.Stats) {
	m.labeled.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pgdr_agent_commit_gate_connected",
			Help: "1 while the commit gate (failover.lease_gated_commits) streams from the local server; while it does not, commits on a primary wait.",
		}, func() float64 {
			if stats().Connected {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "pgdr_agent_commit_gate_withheld_total",
			Help: "Times the commit gate held WAL it would acknowledge and found the primary lease not valid: commits kept waiting (on a replica, where it never acknowledges, it counts up too).",
		}, func() float64 { return float64(stats().Withheld) }))
}

// reportCollector exposes the latest health report.
type reportCollector struct {
	latest func() *pgdrv1.HealthReport
}

var (
	descAgentUp     = prometheus.NewDesc("pgdr_agent_up", "1: the agent daemon is running.", nil, nil)
	descPGUp        = prometheus.NewDesc("pg_up", "1 when the local PostgreSQL accepted a connection and SELECT 1 in the latest check.", nil, nil)
	descPostmaster  = prometheus.NewDesc("pgdr_agent_postmaster_alive", "1 when postmaster.pid names a live PostgreSQL process.", nil, nil)
	descInRecovery  = prometheus.NewDesc("pgdr_agent_in_recovery", "1 when the server is in recovery (a replica).", nil, nil)
	descStreaming   = prometheus.NewDesc("pgdr_agent_streaming", "1 when the WAL receiver is streaming.", nil, nil)
	descLagBytes    = prometheus.NewDesc("pgdr_agent_lag_bytes", "Bytes received but not yet replayed (0 on a primary).", nil, nil)
	descLagSeconds  = prometheus.NewDesc("pgdr_agent_lag_seconds", "Age of the last replayed transaction while replay is behind (0 when caught up).", nil, nil)
	descTimeline    = prometheus.NewDesc("pgdr_agent_timeline", "The server's timeline.", nil, nil)
	descLSN         = prometheus.NewDesc("pgdr_agent_lsn_bytes", "Current WAL position: insert LSN on a primary, replay LSN on a replica.", nil, nil)
	descArchiveFail = prometheus.NewDesc("pgdr_agent_archive_failed_total", "pg_stat_archiver.failed_count.", nil, nil)
	descFreeBytes   = prometheus.NewDesc("pgdr_agent_free_bytes", "Free bytes of the file system holding path.", []string{"path"}, nil)
	descLastCheck   = prometheus.NewDesc("pgdr_agent_last_check_timestamp_seconds", "When the latest round of checks ran.", nil, nil)
	descHeartbeat   = prometheus.NewDesc("pgdr_agent_heartbeat_age_seconds", "Age of the newest write-availability heartbeat this server holds (committed on a primary, replayed on a replica), on this host's clock: on a replica, replication lag measured from the heartbeat plus up to one heartbeat.interval. Absent when none is known.", nil, nil)
)

func (c *reportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgentUp, descPGUp, descPostmaster, descInRecovery, descStreaming, descLagBytes,
		descLagSeconds, descTimeline, descLSN, descArchiveFail, descFreeBytes, descLastCheck, descHeartbeat} {
		ch <- d
	}
}

func (c *reportCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	gauge(descAgentUp, 1)
	r := c.latest()
	if r == nil {
		gauge(descPGUp, 0)
		return
	}
	gauge(descPGUp, b(r.Connectable))
	gauge(descPostmaster, b(r.PostmasterAlive))
	gauge(descLastCheck, float64(r.GetTime().AsTime().UnixNano())/1e9)
	// A failed statfs leaves 0, which would read as a full disk.
	if !strings.Contains(r.Error, "free space of PGDATA") {
		gauge(descFreeBytes, float64(r.PgdataFreeBytes), "pgdata")
	}
	if !strings.Contains(r.Error, "free space of pg_wal") {
		gauge(descFreeBytes, float64(r.PgwalFreeBytes), "pg_wal")
	}
	if !r.Connectable {
		// The rest would be zeros that look like measurements.
		return
	}
	gauge(descInRecovery, b(r.InRecovery))
	gauge(descStreaming, b(r.Streaming))
	gauge(descLagBytes, float64(r.LagBytes))
	gauge(descLagSeconds, r.LagSeconds)
	gauge(descTimeline, float64(r.Timeline))
	gauge(descLSN, float64(r.CurrentLsn))
	ch <- prometheus.MustNewConstMetric(descArchiveFail, prometheus.CounterValue, float64(r.ArchiveFailedCount))
	if hb := r.GetHeartbeatTime(); hb != nil {
		gauge(descHeartbeat, max(time.Since(hb.AsTime()).Seconds(), 0))
	}
}

// copyLagCollector serves the async repositories' copy lag at scrape time.
type copyLagCollector struct {
	status              func() []repocopy.Status
	objects, bytes, age *prometheus.Desc
}

// registerCopyLag registers the copy lag metrics, one series per async
// repository (labelled repository), read from status at scrape time.
func (m *metrics) registerCopyLag(status func() []repocopy.Status) {
	c := &copyLagCollector{
		status:  status,
		objects: prometheus.NewDesc("pgdr_repo_copy_lag_objects", "Objects written to the sync repositories and not yet copied and verified in this async repository (queued).", []string{"repository"}, m.labels),
		bytes:   prometheus.NewDesc("pgdr_repo_copy_lag_bytes", "Bytes of those objects.", []string{"repository"}, m.labels),
		age:     prometheus.NewDesc("pgdr_repo_copy_oldest_missing_seconds", "Age of the oldest object not yet copied to this async repository (0 when caught up).", []string{"repository"}, m.labels),
	}
	m.reg.MustRegister(c)
}

func (c *copyLagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.objects
	ch <- c.bytes
	ch <- c.age
}

func (c *copyLagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.status() {
		ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(s.LagObjects), s.Repo)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.LagBytes), s.Repo)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, s.OldestMissingSeconds, s.Repo)
	}
}
