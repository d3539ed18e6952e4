package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/compliance"
	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Recovery targets measured continuously (coordinator/compliance). The
// leader measures each cluster every complianceInterval: archive RPO from
// the primary's report, failover RPO from the best candidate's received
// LSN against the primary's LSN trail, the last failover or switchover
// from history, the last drill from the DrillSource. Breaches are decided
// by compliance.Decide; each start and end is recorded in history
// (target-breached, target-restored) and so sent through the webhooks
// once. The open breaches are the leader's memory, rebuilt from history
// when a coordinator becomes leader, so a leader change neither repeats
// nor loses them.

const (
	complianceInterval = 2 * time.Second
	// lsnTrailLen bounds the primary LSN samples kept per cluster for the
	// failover RPO's age (one per change, at most one per report).
	lsnTrailLen = 512
)

// DrillSource gives a cluster's last drill restore time (Recorded false
// when none). Drills plug in here; without one, "no drill recorded".
type DrillSource interface {
	LastDrill(cluster string) compliance.Duration
}

type lsnPoint struct {
	at  time.Time
	lsn uint64
}

// complianceState is the leader's memory for compliance; reset when
// leadership changes. Bounded: per cluster, one open set (MaxOpen), one
// LSN trail (lsnTrailLen), one detection time.
type complianceState struct {
	mu     sync.Mutex
	drills DrillSource
	open   map[string]*compliance.Open
	trail  map[string][]lsnPoint
	// down: cluster → when the leader first saw its primary at epoch unhealthy.
	down map[string]downSince
	// last: each cluster's latest measurement (metrics read it).
	last    map[string]*pgdrv1.Compliance
	lastRun time.Time
}

type downSince struct {
	epoch uint64
	at    time.Time
}

func newComplianceState() *complianceState {
	c := &complianceState{}
	c.reset()
	return c
}

func (c *complianceState) reset() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open, c.trail, c.down, c.last = map[string]*compliance.Open{}, map[string][]lsnPoint{}, map[string]downSince{}, map[string]*pgdrv1.Compliance{}
	c.lastRun = time.Time{}
}

// notePrimary records whether the primary of cluster at epoch is healthy
// now: the first unhealthy observation is the failover's detection time.
func (c *complianceState) notePrimary(cluster string, epoch uint64, healthy bool, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if healthy {
		delete(c.down, cluster)
		return
	}
	if d, ok := c.down[cluster]; !ok || d.epoch != epoch {
		c.down[cluster] = downSince{epoch: epoch, at: now}
	}
}

// detectedAt is when the primary of cluster at epoch was first seen down.
func (c *complianceState) detectedAt(cluster string, epoch uint64) (time.Time, bool) {
	if c == nil {
		return time.Time{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.down[cluster]
	return d.at, ok && d.epoch == epoch
}

// noteLSN appends the primary's LSN to cluster's trail when it moved.
func (c *complianceState) noteLSN(cluster string, lsn uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tr := c.trail[cluster]
	if n := len(tr); n > 0 && tr[n-1].lsn >= lsn {
		if tr[n-1].lsn > lsn { // a new timeline or primary: start again
			c.trail[cluster] = []lsnPoint{{at, lsn}}
		}
		return
	}
	if len(tr) >= lsnTrailLen {
		tr = slices.Delete(tr, 0, len(tr)-lsnTrailLen+1)
	}
	c.trail[cluster] = append(tr, lsnPoint{at, lsn})
}

// lagAge is the age of the oldest WAL past recv: when the primary was
// first seen past it (the oldest point known when the trail does not
// reach back so far).
func (c *complianceState) lagAge(cluster string, recv uint64, now time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.trail[cluster] {
		if p.lsn > recv {
			return max(0, now.Sub(p.at).Seconds())
		}
	}
	return 0
}

// clusterEvents returns copies of cluster's history events that
// compliance reads (failovers, switchovers, breaches), oldest first, and
// the time of the oldest event held for the cluster.
func (s *Server) clusterEvents(cluster string) []*pgdrv1.HistoryEvent {
	evs, _ := s.clusterEventsFrom(cluster)
	return evs
}

func (s *Server) clusterEventsFrom(cluster string) ([]*pgdrv1.HistoryEvent, *timestamppb.Timestamp) {
	var evs []*pgdrv1.HistoryEvent
	var oldest *timestamppb.Timestamp
	s.fsm.ScanHistory(cluster, func(ev *pgdrv1.HistoryEvent) {
		if oldest == nil && ev.GetTime() != nil {
			oldest = proto.Clone(ev.GetTime()).(*timestamppb.Timestamp)
		}
		if compliance.Relevant(ev.GetKind()) {
			evs = append(evs, proto.Clone(ev).(*pgdrv1.HistoryEvent))
		}
	})
	return evs, oldest
}

// measure gathers what the leader knows of cluster c's recovery.
func (s *Server) measure(c *pgdrv1.Cluster, samples map[memberKey]sample, events []*pgdrv1.HistoryEvent, now time.Time) (compliance.Measured, string) {
	var m compliance.Measured
	fresh := func(node string) (*pgdrv1.HealthReport, bool) {
		sm, ok := samples[memberKey{c.GetName(), node}]
		return sm.report, ok && now.Sub(sm.at) <= s.cfg.Health.StaleAfter.Duration
	}
	var primaryLSN uint64
	if pr, ok := fresh(c.GetPrimary()); ok && pr.GetConnectable() && !pr.GetInRecovery() {
		primaryLSN = pr.GetCurrentLsn()
		for _, a := range pr.GetArchiveRpo() {
			m.ArchiveRPO = append(m.ArchiveRPO, compliance.RepoRPO{Repo: a.GetRepository(), Mode: a.GetMode(), Bytes: a.GetBytes(), Seconds: a.GetSeconds()})
		}
		if s.comp != nil {
			s.comp.noteLSN(c.GetName(), primaryLSN, now)
		}
	}
	note := ""
	if primaryLSN == 0 {
		note = "the primary is not reporting its position"
	} else {
		var best string
		var bestRecv uint64
		var bestPrio int32
		for name, mem := range c.GetMembers() {
			r, ok := fresh(name)
			if name == c.GetPrimary() || !ok || !r.GetConnectable() || !r.GetInRecovery() || r.GetFenced() || slices.Contains(mem.GetTags(), failover.TagNoFailover) {
				continue
			}
			recv := max(r.GetReceiveLsn(), r.GetReplayLsn())
			if best == "" || recv > bestRecv || recv == bestRecv && (mem.GetPriority() > bestPrio || mem.GetPriority() == bestPrio && name < best) {
				best, bestRecv, bestPrio = name, recv, mem.GetPriority()
			}
		}
		if best == "" {
			note = "no replica can be promoted"
		} else {
			m.FailoverRPO = compliance.FailoverRPO{Known: true, Candidate: best, Bytes: failover.Lag(primaryLSN, bestRecv)}
			if m.FailoverRPO.Bytes > 0 && s.comp != nil {
				m.FailoverRPO.Seconds = s.comp.lagAge(c.GetName(), bestRecv, now)
			}
		}
	}
	m.Failover = compliance.LastRecovery(compliance.Recoveries(events))
	if s.comp != nil && s.comp.drills != nil {
		m.Drill = s.comp.drills.LastDrill(c.GetName())
	}
	return m, note
}

// complianceOf is cluster c's compliance now: targets, measured values
// and breaches (with the time the leader first saw each, when it did),
// and what was measured.
func (s *Server) complianceOf(c *pgdrv1.Cluster, samples map[memberKey]sample, events []*pgdrv1.HistoryEvent, now time.Time) (*pgdrv1.Compliance, []compliance.Breach, compliance.Measured) {
	targets := policy.EffectiveTargets(c)
	m, note := s.measure(c, samples, events, now)
	breaches := compliance.Decide(targets, m)
	out := &pgdrv1.Compliance{Targets: targets.Proto()}
	for _, a := range m.ArchiveRPO {
		out.ArchiveRpo = append(out.ArchiveRpo, &pgdrv1.RepositoryRPO{Repository: a.Repo, Mode: a.Mode, Bytes: a.Bytes, Seconds: a.Seconds, Node: c.GetPrimary()})
	}
	if pr, ok := samples[memberKey{c.GetName(), c.GetPrimary()}]; ok {
		for i, a := range pr.report.GetArchiveRpo() {
			if i < len(out.ArchiveRpo) {
				out.ArchiveRpo[i].ReadySegments = a.GetReadySegments()
			}
		}
	}
	f := m.FailoverRPO
	out.FailoverRpo = &pgdrv1.FailoverRPO{Known: f.Known, Candidate: f.Candidate, LagBytes: f.Bytes, LagSeconds: f.Seconds, Note: note}
	rs := compliance.Recoveries(events)
	for _, src := range []string{compliance.SourceFailover, compliance.SourceSwitchover} {
		out.Rto = append(out.Rto, rtoOf(src, lastOfSource(rs, src)))
	}
	drill := &pgdrv1.RTOMeasure{Source: compliance.SourceDrill, Note: "no drill recorded"}
	if m.Drill.Recorded {
		drill = &pgdrv1.RTOMeasure{Source: compliance.SourceDrill, Recorded: true, Seconds: m.Drill.Seconds, At: timestamppb.New(m.Drill.At)}
	}
	out.Rto = append(out.Rto, drill)
	var since map[string]time.Time
	if s.comp != nil {
		s.comp.mu.Lock()
		if o := s.comp.open[c.GetName()]; o != nil {
			since = map[string]time.Time{}
			for _, b := range o.List() {
				since[b.Key()] = b.Since
			}
		}
		s.comp.mu.Unlock()
	}
	for _, b := range breaches {
		pb := &pgdrv1.Breach{Target: b.Target, Subject: b.Subject, MeasuredSeconds: b.Measured.Seconds(), TargetSeconds: b.Limit.Seconds(), Message: b.Message}
		if t, ok := since[b.Key()]; ok {
			pb.Since = timestamppb.New(t)
		}
		out.Breaches = append(out.Breaches, pb)
	}
	return out, breaches, m
}

// lastOfSource is the newest successful recovery of source (failover
// counts manual failovers too).
func lastOfSource(rs []compliance.Recovery, source string) *compliance.Recovery {
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		isSwitch := r.Kind == compliance.SourceSwitchover
		if r.OK && r.Measured && isSwitch == (source == compliance.SourceSwitchover) {
			return &r
		}
	}
	return nil
}

func rtoOf(source string, r *compliance.Recovery) *pgdrv1.RTOMeasure {
	if r == nil {
		return &pgdrv1.RTOMeasure{Source: source, Note: "no " + source + " recorded"}
	}
	return &pgdrv1.RTOMeasure{Source: source, Recorded: true, Kind: r.Kind, Node: r.Node, At: timestamppb.New(r.Writable), Seconds: r.Duration.Seconds()}
}

// complianceTick measures every cluster, keeps the latest measurement for
// the metrics and records each breach's start and end once.
func (s *Server) complianceTick(ctx context.Context) {
	if s.comp == nil {
		return
	}
	now := time.Now()
	s.comp.mu.Lock()
	due := now.Sub(s.comp.lastRun) >= complianceInterval
	if due {
		s.comp.lastRun = now
	}
	s.comp.mu.Unlock()
	if !due {
		return
	}
	samples := s.view.snapshot()
	clusters := s.fsm.ClusterViews() // read only
	for name, c := range clusters {
		if c.GetPrimary() == "" {
			continue
		}
		events := s.clusterEvents(name)
		out, breaches, m := s.complianceOf(c, samples, events, now)
		s.comp.mu.Lock()
		o := s.comp.open[name]
		if o == nil {
			o = compliance.NewOpen(compliance.OpenFromHistory(events), compliance.ClearAfter)
			s.comp.open[name] = o
		}
		// A breach whose target was not measured this time (the primary
		// not reporting: down, or not reconnected to a new leader yet)
		// stays open: only a measurement within the target clears it.
		ch := o.UpdateMeasured(now, breaches, m.Measures)
		s.comp.last[name] = out
		s.comp.mu.Unlock()
		for _, b := range ch.Started {
			s.recordEvent(ctx, name, compliance.KindBreached, b.Subject, c.GetEpoch(), b.Message,
				map[string]string{compliance.DetailTarget: b.Target, compliance.DetailSubject: b.Subject})
		}
		for _, b := range ch.Cleared {
			s.recordEvent(ctx, name, compliance.KindRestored, b.Subject, c.GetEpoch(),
				"back within target: "+b.Target+" of "+b.Subject+" (breached since "+compliance.FormatTime(b.Since)+")",
				map[string]string{compliance.DetailTarget: b.Target, compliance.DetailSubject: b.Subject})
		}
	}
	// Clusters that were removed are forgotten.
	clusters = s.fsm.ClusterViews()
	s.comp.mu.Lock()
	for name := range s.comp.last {
		if _, ok := clusters[name]; !ok {
			delete(s.comp.last, name)
			delete(s.comp.open, name)
			delete(s.comp.trail, name)
			delete(s.comp.down, name)
		}
	}
	s.comp.mu.Unlock()
}

// lastCompliance is the latest measurement of every cluster (metrics).
func (s *Server) lastCompliance() map[string]*pgdrv1.Compliance {
	if s.comp == nil || !s.isLeader() {
		return nil
	}
	s.comp.mu.Lock()
	defer s.comp.mu.Unlock()
	out := make(map[string]*pgdrv1.Compliance, len(s.comp.last))
	for k, v := range s.comp.last {
		out[k] = v
	}
	return out
}

// complianceStatus is cluster's compliance measured now (Status).
func (s *Server) complianceStatus(cluster string) *pgdrv1.Compliance {
	c, ok := s.fsm.Cluster(cluster)
	if !ok {
		return nil
	}
	out, _, _ := s.complianceOf(c, s.view.snapshotCluster(cluster), s.clusterEvents(cluster), time.Now())
	return out
}
