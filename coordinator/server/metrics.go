package server

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/pkg/buildinfo"
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
	// applyDuration: this coordinator's proposals, from proposing to
	// applied (or forwarded and answered).
	applyDuration prometheus.Histogram
	leaderChanges prometheus.Counter
	refused       *prometheus.CounterVec
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
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pgdr_coordinator_raft_apply_duration_seconds", Help: "Time from proposing a command to it being applied (this coordinator's proposals).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgdr_coordinator_leader_changes_total", Help: "Leader changes this coordinator observed (a new leader known)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgdr_coordinator_failovers_refused_total", Help: "Failovers the leader decided against, by reason (a fixed set)."}, []string{"reason"}),
	}
	for _, r := range refusedReasons {
		m.refused.WithLabelValues(r) // every reason is served from 0
	}
	m.reg.MustRegister(m.reports, m.reportDelay, m.streams, m.authFailures, m.applies, m.forwards,
		m.applyDuration, m.leaderChanges, m.refused, buildinfo.Collector("pgdr-coordinator"),
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
		complianceCollector{s}, raftCollector{s}, newClusterCollector(s), sloCollector{s},
	)
	return m
}

// refusedUnsettled: a failover waits for an earlier promotion that may
// still complete (promote.go); the other reasons are failover.Refused*.
const (
	refusedUnsettled = "unsettled_promote"
	refusedOther     = "other"
)

// refusedReasons is the fixed set of pgdr_coordinator_failovers_refused_total's reason label.
var refusedReasons = []string{failover.RefusedPaused, failover.RefusedFailsafe, failover.RefusedMinInterval,
	failover.RefusedLag, failover.RefusedNotSynchronous, failover.RefusedNoCandidate, refusedUnsettled, refusedOther}

// failoverRefused counts a failover decided against (recorded in
// history); a reason outside the fixed set counts as "other".
func (m *metrics) failoverRefused(reason string) {
	if m == nil {
		return
	}
	if !slices.Contains(refusedReasons, reason) {
		reason = refusedOther
	}
	m.refused.WithLabelValues(reason).Inc()
}

// Raft metrics, read from the raft library at scrape time.
var (
	descRaftState       = prometheus.NewDesc("pgdr_coordinator_raft_state", "1 for the node's Raft state, 0 for the others.", []string{"state"}, nil)
	descRaftTerm        = prometheus.NewDesc("pgdr_coordinator_raft_term", "Current Raft term.", nil, nil)
	descRaftCommit      = prometheus.NewDesc("pgdr_coordinator_raft_commit_index", "Raft commit index.", nil, nil)
	descRaftLastContact = prometheus.NewDesc("pgdr_coordinator_raft_last_contact_seconds",
		"Followers: time since the leader was last heard from (since Raft started when never; 0 on the leader).", nil, nil)
	descRaftVoters = prometheus.NewDesc("pgdr_coordinator_raft_voters", "Voters in the Raft configuration.", nil, nil)
)

type raftCollector struct{ s *Server }

func (c raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftCommit, descRaftLastContact, descRaftVoters} {
		ch <- d
	}
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.s.raft
	if r == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	state := r.State()
	for _, st := range []raft.RaftState{raft.Leader, raft.Follower, raft.Candidate, raft.Shutdown} {
		v := 0.0
		if st == state {
			v = 1
		}
		gauge(descRaftState, v, strings.ToLower(st.String()))
	}
	gauge(descRaftTerm, float64(r.CurrentTerm()))
	gauge(descRaftCommit, float64(r.CommitIndex()))
	contact := 0.0
	if state != raft.Leader {
		last := r.LastContact()
		if last.IsZero() {
			last = c.s.raftStarted
		}
		contact = max(0, time.Since(last).Seconds())
	}
	gauge(descRaftLastContact, contact)
	if f := r.GetConfiguration(); f.Error() == nil {
		n := 0
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				n++
			}
		}
		gauge(descRaftVoters, float64(n))
	}
}

// watchLeaderChanges counts the leaders r reports, each one a change
// (raft reports only changes; "no leader" is not counted), until ctx ends.
func (s *Server) watchLeaderChanges(ctx context.Context, r *raft.Raft) {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(obs)
	go func() {
		defer r.DeregisterObserver(obs)
		for {
			select {
			case <-ctx.Done():
				return
			case o := <-ch:
				lo, ok := o.Data.(raft.LeaderObservation)
				if ok && lo.LeaderID != "" {
					s.metrics.leaderChanges.Inc()
				}
				if ok && s.incidents != nil && s.incidents.leaderSeen(string(lo.LeaderID), r.CurrentTerm(), time.Now()) {
					go s.incidents.reportAsFollower(ctx)
				}
			}
		}
	}()
}
