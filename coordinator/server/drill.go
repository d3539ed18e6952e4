package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/drillsched"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Restore drills (issue 17), on the Raft leader: an operator's drill
// (AdminService.RunDrill) is placed by drillsched.Place, recorded as an
// intent through Raft, ordered to its node's agent (agent/drillrun) and
// recorded sent; the agent's answers record it accepted and then its
// result. Every drillEvery the leader records timed out a drill past its
// timeout and grace (drillsched.Overdue) and sends its agent a cancel
// order, and orders again, once per leadership, a drill in flight it
// inherited unaccepted (its leader may have died before the order went
// out). An agent whose stream opens gets its drill in flight ordered
// again (an agent answers a repeated run id with the run's state, so a
// lost answer comes again). A result goes into history (kind "drill",
// details result and reason), to the webhooks when it is not ok (kind
// "drill-failed") and into the metrics.

// Drill defaults.
const (
	// DefaultDrillTimeout bounds a drill of an operator's request.
	DefaultDrillTimeout = time.Hour
	drillGrace          = time.Minute
	drillEvery          = 5 * time.Second
	// drillFeatureLevel: the voters know RecordDrillRun.
	drillFeatureLevel = 2
	kindDrill         = "drill"
	kindDrillFailed   = "drill-failed"
)

// drills is the leader's drill runner; its maps are this leadership's.
type drills struct {
	s   *Server
	log *slog.Logger
	// mu: one decision at a time (a request and a tick never both start
	// a drill; the FSM refuses a second in flight anyway).
	mu sync.Mutex
	// grace is drillGrace (tests shorten it).
	grace   time.Duration
	ordered map[string]bool
	// waited: the slot each cluster's scheduled drill last waited for
	// (logged once per slot).
	waited map[string]time.Time
	runs   *prometheus.CounterVec
}

func newDrills(s *Server, log *slog.Logger) *drills {
	d := &drills{s: s, log: log.With("component", "drills"), grace: drillGrace, ordered: map[string]bool{}, waited: map[string]time.Time{},
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgdr_drill_runs_total",
			Help: "Restore drills this coordinator recorded ended, by cluster and result."}, []string{"cluster", "result"})}
	return d
}

// ready: every voter knows the drill records (gossip feature levels).
func (d *drills) ready() (bool, string) {
	return votersReadyFor(d.s.cfg.Name, d.s.voters(), d.s.featureLevels(), drillFeatureLevel, "restore drills")
}

func (d *drills) record(ctx context.Context, actor string, rec *pgdrv1.RecordDrillRun) error {
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RECORD_DRILL_RUN, rec, actor, time.Now())
	if err != nil {
		return status.Errorf(codes.Internal, "encoding command: %v", err)
	}
	cmd.IgnoreIfUnknown = true
	_, err = d.s.proposeCommand(ctx, cmd)
	return err
}

func runsOf(c *pgdrv1.Cluster) []drillsched.Run {
	var out []drillsched.Run
	for _, r := range c.GetDrillRuns() {
		run := drillsched.Run{ID: r.GetId(), Node: r.GetNode(), Result: r.GetResult(), Due: due(r)}
		if t := r.GetSlot(); t != nil {
			run.Slot = t.AsTime()
		}
		out = append(out, run)
	}
	return out
}

// due is when r's timeout passes, on the clock of the leader that
// recorded it.
func due(r *pgdrv1.DrillRun) time.Time {
	return r.GetStartedAt().AsTime().Add(time.Duration(r.GetTimeoutMs()) * time.Millisecond)
}

// place is the node of an operator's drill of c, and why.
func (d *drills) place(c *pgdrv1.Cluster, want string) (node, why string, err error) {
	return drillsched.Place(drillsched.Input{Now: time.Now(), Members: schedServer{d.s}.Members(c), Runs: runsOf(c)}, want)
}

// start records run (node and reason decided) as a new drill of c,
// orders it and records it sent; an order that cannot be written ends it
// not_started at once.
func (d *drills) start(ctx context.Context, c *pgdrv1.Cluster, run *pgdrv1.DrillRun, actor string) (*pgdrv1.DrillRun, error) {
	run.Id = newCommandID()
	node, timeout := run.GetNode(), time.Duration(run.GetTimeoutMs())*time.Millisecond
	if err := d.record(ctx, actor, &pgdrv1.RecordDrillRun{Cluster: c.GetName(), Phase: &pgdrv1.RecordDrillRun_Intent{Intent: run}}); err != nil {
		return nil, fmt.Errorf("recording the intent of a drill on %s: %w", node, err)
	}
	d.ordered[run.Id] = true
	if err := (schedServer{d.s}).Order(ctx, d.order(c, run, timeout)); err != nil {
		d.finish(ctx, actor, c.GetName(), run, &pgdrv1.DrillRunResult{Id: run.Id, Result: fsm.RunNotStarted, Error: "order not sent: " + err.Error()})
		return run, nil
	}
	if err := d.record(ctx, actor, &pgdrv1.RecordDrillRun{Cluster: c.GetName(), Phase: &pgdrv1.RecordDrillRun_Step{Step: &pgdrv1.DrillRunStep{Id: run.Id, Step: fsm.StepSent}}}); err != nil {
		d.log.Warn("recording that a drill order went out", "cluster", c.GetName(), "run", run.Id, "err", err)
	}
	d.log.Info("restore drill ordered", "cluster", c.GetName(), "run", run.Id, "node", node, "reason", run.Reason)
	return run, nil
}

// order is run's Drill order with timeout.
func (d *drills) order(c *pgdrv1.Cluster, run *pgdrv1.DrillRun, timeout time.Duration) *pgdrv1.AgentCommand {
	now := time.Now()
	return &pgdrv1.AgentCommand{Id: run.GetId(), Cluster: c.GetName(), Node: run.GetNode(), Epoch: c.GetEpoch(),
		IssuedAt: timestamppb.New(now), Deadline: timestamppb.New(now.Add(time.Minute)),
		Kind: &pgdrv1.AgentCommand_Drill{Drill: &pgdrv1.Drill{RunId: run.GetId(), Tier: run.GetTier(), BackupId: run.GetBackupId(),
			TargetTime: run.GetTargetTime(), TimeoutMs: timeout.Milliseconds(), Checks: run.GetChecks(), Scratch: run.GetScratch(),
			TargetAfterBackupMs: run.GetTargetAfterBackupMs()}}}
}

func (d *drills) cancelOrder(c *pgdrv1.Cluster, run *pgdrv1.DrillRun, why string) *pgdrv1.AgentCommand {
	now := time.Now()
	id := run.GetId() + "-cancel"
	if len(id) > maxCommandID {
		id = newCommandID()
	}
	return &pgdrv1.AgentCommand{Id: id, Cluster: c.GetName(), Node: run.GetNode(), Epoch: c.GetEpoch(),
		IssuedAt: timestamppb.New(now), Deadline: timestamppb.New(now.Add(time.Minute)),
		Kind: &pgdrv1.AgentCommand_Drill{Drill: &pgdrv1.Drill{RunId: run.GetId(), Cancel: true, CancelReason: why}}}
}

// finish records run's result, then its history event, webhook and
// metrics; the error is the record's.
func (d *drills) finish(ctx context.Context, actor, cluster string, run *pgdrv1.DrillRun, res *pgdrv1.DrillRunResult) error {
	if err := d.record(ctx, actor, &pgdrv1.RecordDrillRun{Cluster: cluster, Phase: &pgdrv1.RecordDrillRun_Result{Result: res}}); err != nil {
		return err
	}
	d.runs.WithLabelValues(cluster, res.GetResult()).Inc()
	rep := res.GetReport()
	details := map[string]string{"run": run.GetId(), "result": res.GetResult()}
	reason := rep.GetReason() // the drill's own words, else the error
	if reason == "" {
		reason = res.GetError()
	}
	if reason != "" {
		details["reason"] = clipText(reason, 1024)
	}
	if rep != nil {
		details["backup"], details["target"] = rep.GetBackup(), rep.GetTarget()
		details["total_seconds"] = strconv.FormatFloat(rep.GetTimings().GetTotal(), 'f', 1, 64)
		details["rpo_seconds"] = strconv.FormatFloat(rep.GetRpoSeconds(), 'f', 1, 64)
	}
	msg := fmt.Sprintf("restore drill %s on %s: %s", run.GetId(), run.GetNode(), res.GetResult())
	if reason != "" {
		msg += ": " + clipText(reason, 512)
	}
	level := slog.LevelInfo
	if res.GetResult() != fsm.RunOK {
		level = slog.LevelWarn
	}
	d.log.Log(ctx, level, "restore drill ended", "cluster", cluster, "run", run.GetId(), "node", run.GetNode(), "result", res.GetResult(), "reason", reason)
	if _, err := d.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
		Cluster: cluster, Kind: kindDrill, Node: run.GetNode(), Message: msg, Details: details}}, "coordinator:"+d.s.cfg.Name); err != nil {
		d.log.Warn("recording a drill's history event", "cluster", cluster, "run", run.GetId(), "err", err)
	}
	d.s.notifyEvent(cluster, kindDrill, run.GetNode(), 0, msg, details)
	if res.GetResult() != fsm.RunOK && res.GetResult() != fsm.RunCancelled {
		d.s.notifyEvent(cluster, kindDrillFailed, run.GetNode(), 0, msg, details)
	}
	return nil
}

// answer records an agent's answer about a drill in flight (named by its
// report's run id, or by the command id for an agent that does not know
// Drill orders). An answer that must come again is an Unavailable error.
func (d *drills) answer(ctx context.Context, r *pgdrv1.CommandResult) error {
	id := r.GetDrill().GetRunId()
	if id == "" {
		id = r.GetId()
	}
	c, ok := d.s.fsm.Cluster(r.GetCluster())
	var run *pgdrv1.DrillRun
	if ok {
		for _, dr := range c.GetDrillRuns() {
			if dr.GetId() == id && dr.GetNode() == r.GetNode() {
				run = dr
			}
		}
	}
	if run == nil {
		if r.GetDrill().GetRunId() != "" && !d.s.caughtUpLeader() {
			return status.Errorf(codes.Unavailable, "drill %s is not known to this coordinator, which is not the leader: send it again", id)
		}
		return nil
	}
	if run.GetResult() != "" {
		return nil
	}
	actor := "agent:" + r.GetNode()
	if r.GetPending() {
		if run.GetAcceptedAt() != nil {
			return nil
		}
		if err := d.record(ctx, actor, &pgdrv1.RecordDrillRun{Cluster: c.GetName(), Phase: &pgdrv1.RecordDrillRun_Step{Step: &pgdrv1.DrillRunStep{Id: id, Step: fsm.StepAccepted}}}); err != nil {
			return status.Errorf(codes.Unavailable, "recording that drill %s was accepted: %v", id, err)
		}
		return nil
	}
	res := &pgdrv1.DrillRunResult{Id: id, Result: fsm.RunOK, Error: r.GetError(), Report: r.GetDrill()}
	switch {
	case r.GetOk():
	case r.GetDrill().GetNotStarted():
		res.Result = fsm.RunNotStarted
	default:
		res.Result = fsm.RunFailed
	}
	if err := d.finish(ctx, actor, c.GetName(), run, res); err != nil {
		return status.Errorf(codes.Unavailable, "recording the result of drill %s: %v", id, err)
	}
	return nil
}

// run ticks while ctx (this node's leadership) lasts.
func (d *drills) run(ctx context.Context) {
	d.mu.Lock()
	d.ordered, d.waited = map[string]bool{}, map[string]time.Time{}
	d.mu.Unlock()
	t := time.NewTicker(drillEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ok, _ := d.ready(); ok {
			d.tick(ctx)
		}
	}
}

// tick records timed out the drills over their timeout (and cancels them
// on their agents), and orders again an inherited unaccepted drill.
func (d *drills) tick(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	actor := "coordinator:" + d.s.cfg.Name
	for _, name := range (schedServer{d.s}).ClusterNames() {
		c, ok := d.s.fsm.Cluster(name)
		if !ok {
			continue
		}
		if id := drillsched.Overdue(drillsched.Input{Now: time.Now(), Runs: runsOf(c), Grace: d.grace}); id != "" {
			run := drillByID(c, id)
			why := fmt.Sprintf("no result within the timeout of %s and %s of grace", duration.Format(time.Duration(run.GetTimeoutMs())*time.Millisecond), duration.Format(d.grace))
			if err := d.finish(ctx, actor, name, run, &pgdrv1.DrillRunResult{Id: id, Result: fsm.RunTimeout, Error: why}); err != nil {
				d.log.Warn("recording a drill timed out", "cluster", name, "run", id, "err", err)
				continue
			}
			if err := (schedServer{d.s}).Order(ctx, d.cancelOrder(c, run, why)); err != nil {
				d.log.Warn("sending a timed-out drill's cancel order (its agent's own timeout stops it)", "cluster", name, "run", id, "err", err)
			}
			continue
		}
		d.scheduled(ctx, c)
		for _, run := range c.GetDrillRuns() {
			if run.GetResult() != "" || run.GetAcceptedAt() != nil || d.ordered[run.GetId()] {
				continue
			}
			left := time.Until(due(run)).Truncate(time.Millisecond)
			if left <= 0 {
				d.ordered[run.GetId()] = true
				continue
			}
			if err := (schedServer{d.s}).Order(ctx, d.order(c, run, left)); err != nil {
				continue // its stream is not open yet: the next tick, or StreamOpened
			}
			d.ordered[run.GetId()] = true
			d.log.Info("ordered again a drill in flight that a previous leader ordered", "cluster", name, "run", run.GetId(), "node", run.GetNode())
		}
	}
}

// scheduled starts c's scheduled drill when its policy's slot is due
// (drillsched.Scheduled). A paused cluster runs none. d.mu is held.
func (d *drills) scheduled(ctx context.Context, c *pgdrv1.Cluster) {
	p, _ := policy.Effective(c)
	if p.Drill == nil || c.GetPolicy().GetPaused() {
		return
	}
	p.Normalize()
	since := p.UpdatedAt
	if since.IsZero() {
		since = c.GetCreatedAt().AsTime()
	}
	dec, err := drillsched.Scheduled(drillsched.Input{Now: time.Now(), Members: schedServer{d.s}.Members(c), Runs: runsOf(c)},
		drillsched.Schedule{Next: p.Drill.NextRun, Since: since, Node: p.Drill.Node})
	log := d.log.With("cluster", c.GetName())
	switch {
	case err != nil:
		log.Warn("the drill schedule cannot be read", "err", err)
		return
	case !dec.Start:
		if !dec.Slot.IsZero() && !d.waited[c.GetName()].Equal(dec.Slot) {
			d.waited[c.GetName()] = dec.Slot // said once per slot
			log.Warn("scheduled restore drill waits", "reason", dec.Reason)
		}
		return
	}
	run := &pgdrv1.DrillRun{Node: dec.Node, Tier: p.Drill.Tier, TimeoutMs: p.Drill.Timeout.Milliseconds(), Scratch: p.Drill.Scratch,
		Checks: policy.DrillChecksProto(p.Drill.Checks), Slot: timestamppb.New(dec.Slot), Reason: dec.Reason,
		TargetAfterBackupMs: p.Drill.TargetAfterBackup.Milliseconds()}
	if _, err := d.start(ctx, c, run, "coordinator:"+d.s.cfg.Name); err != nil {
		log.Warn("starting a scheduled restore drill", "err", err)
	}
}

// streamOpened orders again node's drill in flight (with what is left of
// its timeout): an answer lost with the previous stream comes again.
func (d *drills) streamOpened(ctx context.Context, cluster, node string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.s.fsm.Cluster(cluster)
	if !ok {
		return
	}
	for _, run := range c.GetDrillRuns() {
		if run.GetResult() != "" || run.GetNode() != node {
			continue
		}
		left := time.Until(due(run)).Truncate(time.Millisecond)
		if left <= 0 {
			continue
		}
		if err := (schedServer{d.s}).Order(ctx, d.order(c, run, left)); err == nil {
			d.ordered[run.GetId()] = true
		}
	}
}

func drillByID(c *pgdrv1.Cluster, id string) *pgdrv1.DrillRun {
	for _, r := range c.GetDrillRuns() {
		if r.GetId() == id {
			return r
		}
	}
	return nil
}

// drillPolicyAllowed refuses a policy with a drill section until every
// voter knows drills (an older voter would keep the section without
// checking its bounds, and run none).
func (s *Server) drillPolicyAllowed(bp *pgdrv1.BackupPolicy) error {
	if bp.GetDrill() == nil || s.drills == nil {
		return nil
	}
	if ok, why := s.drills.ready(); !ok {
		return status.Errorf(codes.FailedPrecondition, "a drill section cannot be set yet: %s", why)
	}
	return nil
}

// ListDrillRuns lists the recorded drills from this coordinator's state.
func (a *adminAPI) ListDrillRuns(ctx context.Context, req *pgdrv1.ListDrillRunsRequest) (*pgdrv1.ListDrillRunsResponse, error) {
	if err := a.s.stateReadable(); err != nil {
		return nil, err
	}
	names, clusters, err := a.listed(req.GetCluster())
	if err != nil {
		return nil, err
	}
	out := &pgdrv1.ListDrillRunsResponse{}
	for _, n := range names {
		out.Clusters = append(out.Clusters, &pgdrv1.ClusterDrillRuns{Cluster: n, Runs: clusters[n].GetDrillRuns()})
	}
	return out, nil
}

// listed are the clusters a list request names (cluster, or every one
// when ""), sorted, from this coordinator's state.
func (a *adminAPI) listed(cluster string) ([]string, map[string]*pgdrv1.Cluster, error) {
	if err := checkName("cluster", cluster, false); err != nil {
		return nil, nil, err
	}
	if cluster != "" {
		if err := a.clusterMustExist(cluster); err != nil {
			return nil, nil, err
		}
	}
	clusters := a.s.fsm.Clusters()
	names := make([]string, 0, len(clusters))
	for n := range clusters {
		if cluster == "" || n == cluster {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, clusters, nil
}

// RunDrill has the leader order a restore drill now; a follower forwards
// it. Refused while another drill of the cluster is in flight, or when
// no member can run it (both FailedPrecondition, naming why).
func (a *adminAPI) RunDrill(ctx context.Context, req *pgdrv1.RunDrillRequest) (*pgdrv1.RunDrillResponse, error) {
	if err := checkName("cluster", req.GetCluster(), true); err != nil {
		return nil, err
	}
	if err := checkName("tier", req.GetTier(), false); err != nil {
		return nil, err
	}
	if err := checkName("node", req.GetNode(), false); err != nil {
		return nil, err
	}
	if len(req.GetBackupId()) > 256 {
		return nil, invalid("backup_id", "at most 256 bytes")
	}
	if req.GetTier() != "" && req.GetBackupId() != "" {
		return nil, invalid("backup_id", "give a tier or a backup, not both")
	}
	if t := req.GetTargetTime(); t != nil && (t.CheckValid() != nil || t.AsTime().After(time.Now().Add(time.Minute))) {
		return nil, invalid("target_time", "not a valid time in the past")
	}
	if !a.s.isLeader() {
		conn, err := a.s.leaderConn()
		if err != nil {
			return nil, err
		}
		return pgdrv1.NewAdminServiceClient(conn).RunDrill(forwardCtx(ctx), req)
	}
	if !a.s.caughtUpLeader() {
		return nil, errCatchingUp
	}
	if err := a.clusterMustExist(req.GetCluster()); err != nil {
		return nil, err
	}
	run, err := a.s.runDrillNow(ctx, req, requester(ctx))
	if err != nil {
		return nil, err
	}
	return &pgdrv1.RunDrillResponse{Run: run}, nil
}

// runDrillNow has this leader order the drill req asks for now, on
// behalf of actor (an operator, or a runbook's step).
func (s *Server) runDrillNow(ctx context.Context, req *pgdrv1.RunDrillRequest, actor string) (*pgdrv1.DrillRun, error) {
	d := s.drills
	if ok, why := d.ready(); !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "restore drills cannot run yet: %s", why)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := s.fsm.Cluster(req.GetCluster())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "cluster %q is not known", req.GetCluster())
	}
	node, why, err := d.place(c, req.GetNode())
	var run *pgdrv1.DrillRun
	if err == nil {
		// An operator's drill carries the policy's checks and scratch
		// directory when the policy schedules drills.
		p, _ := policy.Effective(c)
		run = &pgdrv1.DrillRun{Node: node, Tier: req.GetTier(), BackupId: req.GetBackupId(), TargetTime: req.GetTargetTime(),
			TimeoutMs: DefaultDrillTimeout.Milliseconds(), Reason: "on request of " + actor + "; " + why}
		if p.Drill != nil {
			run.Checks, run.Scratch, run.TimeoutMs = policy.DrillChecksProto(p.Drill.Checks), p.Drill.Scratch, p.Drill.Timeout.Milliseconds()
		}
		run, err = d.start(ctx, c, run, actor)
	}
	switch {
	case errors.Is(err, drillsched.ErrBusy), errors.Is(err, drillsched.ErrNoNode):
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s: %v", req.GetCluster(), err)
	case err != nil:
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Internal, "cluster %s: %v", req.GetCluster(), err)
	}
	if c, ok := s.fsm.Cluster(req.GetCluster()); ok {
		if r := drillByID(c, run.GetId()); r != nil {
			run = r
		}
	}
	return run, nil
}

// drillCollector exports the replicated drill records: the last
// successful drill's time and the newest finished drill's phases, per
// cluster (the same on every coordinator).
type drillCollector struct{ s *Server }

var (
	drillLastOK = prometheus.NewDesc("pgdr_drill_last_success_timestamp_seconds",
		"When the newest successful restore drill of the cluster ended (Unix seconds).", []string{"cluster"}, nil)
	drillDuration = prometheus.NewDesc("pgdr_drill_duration_seconds",
		"The newest restore drill with a report: its time per phase (fetch_write, replay, checks, total).", []string{"cluster", "phase"}, nil)
)

func (dc drillCollector) Describe(ch chan<- *prometheus.Desc) { ch <- drillLastOK; ch <- drillDuration }

func (dc drillCollector) Collect(ch chan<- prometheus.Metric) {
	var out []prometheus.Metric
	// Read in place (the drill records only), not a copy of every cluster.
	dc.s.fsm.Read(func(st *pgdrv1.State) {
		for name, c := range st.GetClusters() {
			var lastOK, lastRep *pgdrv1.DrillRun
			for _, r := range c.GetDrillRuns() {
				if r.GetResult() == fsm.RunOK {
					lastOK = r
				}
				if r.GetResult() != "" && r.GetReport().GetTimings() != nil {
					lastRep = r
				}
			}
			if lastOK != nil {
				out = append(out, prometheus.MustNewConstMetric(drillLastOK, prometheus.GaugeValue, float64(lastOK.GetFinishedAt().AsTime().UnixMilli())/1000, name))
			}
			if lastRep != nil {
				t := lastRep.GetReport().GetTimings()
				for phase, v := range map[string]float64{"fetch_write": t.GetFetchWrite(), "replay": t.GetReplay(), "checks": t.GetChecks(), "total": t.GetTotal()} {
					out = append(out, prometheus.MustNewConstMetric(drillDuration, prometheus.GaugeValue, v, name, phase))
				}
			}
		}
	})
	for _, m := range out {
		ch <- m
	}
}
