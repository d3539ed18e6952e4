package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one coordinator's Prometheus metrics, in its own registry.
type metrics struct {
	reg          *prometheus.Registry
	reports      prometheus.Counter
	reportDelay  prometheus.Histogram
	streams      prometheus.Gauge
	authFailures prometheus.Counter
	applies      *prometheus.CounterVec
	forwards     prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgdr_coordinator_reports_total", Help: "Agent health reports received while leader."}),
		reportDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pgdr_coordinator_report_delay_seconds", Help: "Time from an agent taking a sample to the leader receiving it.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgdr_coordinator_agent_streams", Help: "Open agent report and command streams."}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgdr_coordinator_auth_failures_total", Help: "API calls refused for missing or insufficient credentials."}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_coordinator_raft_applies_total", Help: "Commands proposed by this coordinator, by result."}, []string{"result"}),
		forwards: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgdr_coordinator_forwarded_total", Help: "Requests forwarded to the leader."}),
	}
	m.reg.MustRegister(m.reports, m.reportDelay, m.streams, m.authFailures, m.applies, m.forwards,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgdr_coordinator_leader", Help: "1 while this coordinator is the Raft leader."},
			func() float64 {
				if s.isLeader() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgdr_coordinator_applied_index", Help: "Raft index of the last applied command."},
			func() float64 { return float64(s.fsm.LastIndex()) }),
		healthCollector{s},
		complianceCollector{s},
	)
	return m
}

// healthCollector exports how many members the leader judges healthy and
// not, from one judgement of every member per scrape.
type healthCollector struct{ s *Server }

var (
	descMembersHealthy   = prometheus.NewDesc("pgdr_coordinator_members_healthy", "Members judged healthy (leader only).", nil, nil)
	descMembersUnhealthy = prometheus.NewDesc("pgdr_coordinator_members_unhealthy", "Members judged unhealthy (leader only).", nil, nil)
)

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembersHealthy
	ch <- descMembersUnhealthy
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	healthy, unhealthy := c.s.countHealthy()
	ch <- prometheus.MustNewConstMetric(descMembersHealthy, prometheus.GaugeValue, float64(healthy))
	ch <- prometheus.MustNewConstMetric(descMembersUnhealthy, prometheus.GaugeValue, float64(unhealthy))
}
