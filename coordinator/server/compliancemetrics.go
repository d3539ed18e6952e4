package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/coordinator/compliance"
)

// Recovery target metrics, from the leader's latest measurement of each
// cluster (complianceTick); a follower exports none. Labels are bounded:
// cluster, a repository name of the agents' configuration, a source
// (failover, switchover, drill) or a target name.
var (
	descArchiveRPO = prometheus.NewDesc("pgdr_cluster_archive_rpo_seconds",
		"Age of the oldest WAL not yet in the repository, as the primary reports it.", []string{"cluster", "repository"}, nil)
	descArchiveRPOBytes = prometheus.NewDesc("pgdr_cluster_archive_rpo_bytes",
		"WAL bytes not yet in the repository, as the primary reports them.", []string{"cluster", "repository"}, nil)
	descFailoverRPOBytes = prometheus.NewDesc("pgdr_cluster_failover_rpo_bytes",
		"Bytes the best failover candidate lacks behind the primary.", []string{"cluster"}, nil)
	descFailoverRPOSeconds = prometheus.NewDesc("pgdr_cluster_failover_rpo_seconds",
		"Age of the oldest WAL the best failover candidate lacks.", []string{"cluster"}, nil)
	descRTO = prometheus.NewDesc("pgdr_cluster_rto_seconds",
		"The latest measured recovery time by source: failover and switchover (detection or request to a writable new primary), drill (restore).",
		[]string{"cluster", "source"}, nil)
	descBreached = prometheus.NewDesc("pgdr_cluster_target_breached",
		"1 while a recovery target is breached (archive_rpo, failover_rpo, failover, rto).", []string{"cluster", "target"}, nil)
	descTarget = prometheus.NewDesc("pgdr_cluster_target_seconds",
		"The cluster's recovery targets (rto, rpo, failover).", []string{"cluster", "target"}, nil)
)

type complianceCollector struct{ s *Server }

func (c complianceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descArchiveRPO, descArchiveRPOBytes, descFailoverRPOBytes, descFailoverRPOSeconds, descRTO, descBreached, descTarget} {
		ch <- d
	}
}

func (c complianceCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for cluster, cp := range c.s.lastCompliance() {
		for _, a := range cp.GetArchiveRpo() {
			gauge(descArchiveRPO, a.GetSeconds(), cluster, a.GetRepository())
			gauge(descArchiveRPOBytes, float64(a.GetBytes()), cluster, a.GetRepository())
		}
		if f := cp.GetFailoverRpo(); f.GetKnown() {
			gauge(descFailoverRPOBytes, float64(f.GetLagBytes()), cluster)
			gauge(descFailoverRPOSeconds, f.GetLagSeconds(), cluster)
		}
		for _, r := range cp.GetRto() {
			if r.GetRecorded() {
				gauge(descRTO, r.GetSeconds(), cluster, r.GetSource())
			}
		}
		breached := map[string]bool{}
		for _, b := range cp.GetBreaches() {
			breached[b.GetTarget()] = true
		}
		for _, t := range []string{compliance.TargetArchiveRPO, compliance.TargetFailoverRPO, compliance.TargetFailover, compliance.TargetRTO} {
			v := 0.0
			if breached[t] {
				v = 1
			}
			gauge(descBreached, v, cluster, t)
		}
		t := compliance.TargetsFromProto(cp.GetTargets())
		gauge(descTarget, t.RTO.Seconds(), cluster, "rto")
		gauge(descTarget, t.RPO.Seconds(), cluster, "rpo")
		gauge(descTarget, t.Failover.Seconds(), cluster, "failover")
	}
}
