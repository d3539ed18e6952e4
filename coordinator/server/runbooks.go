package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgdr/pgdr/coordinator/failover"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/notify"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/coordinator/runbook"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Runbooks: the leader carries out the runs kept in the replicated state.
//
// Every runbookTick, for each run in flight, the leader builds a View of
// the run's cluster and asks runbook.Next; a decision other than wait is
// proposed first (RunbookDecide: intent, recorded with the leadership that
// takes it) and only once committed carried out: a start or rollback
// sends its action (pause, resume, switchover, backup, drill, notify) in
// its own goroutine, one at a time per run, and records the outcome
// (RunbookRecord; a backup or drill records the run it started with
// RunbookRef and ends with it). A leader that dies mid-step leaves the
// step running under its leadership; the next leader's Next judges it
// from the view (runbook.Next's judge: a switchover is never sent twice,
// an idempotent pause is sent again). Every transition is in history and
// on the run's incident.

const runbookTick = 500 * time.Millisecond

// runbooksFeatureLevel: the voters know COMMAND_TYPE_RUNBOOK. The runbook
// commands are proposed ignore_if_unknown, and a voter of the incidents
// era (level 4: incidents started, no runbooks) would skip them and
// diverge; so nothing of runbooks is proposed until every server of the
// configuration advertises this level.
const runbooksFeatureLevel = 5

// runbooksReady: every server of the Raft configuration knows the runbook
// command (gossip feature levels, else asked; both cached).
func (s *Server) runbooksReady() (bool, string) {
	servers := s.voters()
	return votersReadyFor(s.cfg.Name, servers, peerLevels(s.cfg.Name, servers, s.featureLevels(), s.askLevel), runbooksFeatureLevel, "runbooks")
}

// repoCaughtUpBytes: a repository is caught up when no completed segment
// is missing from it (what is not in it is at most the segment being
// written).
const repoCaughtUpBytes = 16 << 20

type runbookRunner struct {
	s   *Server
	log *slog.Logger

	mu   sync.Mutex
	busy map[string]bool // run id → an action of it is being carried out
	// led: when this coordinator's current leadership began (run).
	led time.Time
}

func newRunbookRunner(s *Server, log *slog.Logger) *runbookRunner {
	return &runbookRunner{s: s, log: log.With("subsystem", "runbooks"), busy: map[string]bool{}}
}

// leadership identifies this leadership: name and Raft term.
func (r *runbookRunner) leadership() string {
	term := uint64(0)
	if r.s.raft != nil {
		term = r.s.raft.CurrentTerm()
	}
	return fmt.Sprintf("%s/term-%d", r.s.cfg.Name, term)
}

func (r *runbookRunner) run(ctx context.Context) {
	r.mu.Lock()
	r.led = time.Now()
	r.mu.Unlock()
	t := time.NewTicker(runbookTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !r.s.fsm.IncidentsStarted() {
			continue
		}
		if ok, why := r.s.runbooksReady(); !ok {
			r.log.Debug("runbook runs held", "why", why)
			continue
		}
		for _, run := range r.s.fsm.RunbookRunsInFlight("") {
			r.step(ctx, run)
		}
	}
}

// step takes the next decision of one run in flight.
func (r *runbookRunner) step(ctx context.Context, run *pgdrv1.RunbookRun) {
	rs, err := fsm.RunState(run)
	if err != nil || rs.Result != "" {
		return
	}
	r.mu.Lock()
	busy := r.busy[run.GetId()]
	r.mu.Unlock()
	if busy {
		return
	}
	rb, err := runbook.Parse([]byte(run.GetYaml()))
	if err != nil {
		r.log.Error("runbook run: its runbook does not parse", "run", run.GetId(), "err", err)
		return
	}
	c, ok := r.s.fsm.Cluster(run.GetCluster())
	if !ok {
		return
	}
	d := runbook.Next(rb, rs, r.view(c, run.GetId()), time.Now())
	if d.Kind == runbook.KindWait || d.Kind == runbook.KindEnded {
		return
	}
	if !r.proposeDecision(ctx, run.GetId(), d) {
		return
	}
	if (d.Kind == runbook.KindStart || d.Kind == runbook.KindRollback) && d.Body.Action != runbook.ActionWait {
		r.mu.Lock()
		r.busy[run.GetId()] = true
		r.mu.Unlock()
		go func() {
			defer func() {
				r.mu.Lock()
				delete(r.busy, run.GetId())
				r.mu.Unlock()
			}()
			r.carryOut(ctx, run, d)
		}()
	}
}

func (r *runbookRunner) propose(ctx context.Context, what string, op *pgdrv1.RunbookCommand) bool {
	cmd, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RUNBOOK, op, "coordinator:"+r.s.cfg.Name, time.Now())
	if err != nil {
		r.log.Error("encoding runbook command", "what", what, "err", err)
		return false
	}
	cmd.IgnoreIfUnknown = true
	// Only this term's caught-up leader records a run's moves, on its own
	// log (proposeHere never forwards: a deposed leader's decision,
	// committed by the next leader, would be carried out by both).
	if ctx.Err() != nil || !r.s.caughtUpLeader() {
		return false
	}
	if _, err := r.s.proposeHere(cmd); err != nil {
		if ctx.Err() == nil {
			r.log.Warn("runbook command", "what", what, "err", err)
		}
		return false
	}
	return true
}

func (r *runbookRunner) proposeDecision(ctx context.Context, id string, d runbook.Decision) bool {
	b, err := json.Marshal(d)
	if err != nil {
		r.log.Error("encoding runbook decision", "run", id, "err", err)
		return false
	}
	return r.propose(ctx, string(d.Kind)+" "+d.Step, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Decide{Decide: &pgdrv1.RunbookDecide{RunId: id, DecisionJson: b}}})
}

// carryOut sends the action of decision d and records its outcome (a
// backup or drill: the run it started). A leadership lost meanwhile
// records nothing: the next leader judges the step.
func (r *runbookRunner) carryOut(ctx context.Context, run *pgdrv1.RunbookRun, d runbook.Decision) {
	actor := runbook.RunActor(run.GetRunbook(), run.GetId())
	cluster := run.GetCluster()
	var o runbook.Outcome
	switch d.Body.Action {
	case runbook.ActionPause, runbook.ActionResume:
		paused := d.Body.Action == runbook.ActionPause
		if c, ok := r.s.fsm.Cluster(cluster); ok && c.GetPolicy().GetPaused() == paused {
			// Someone else (an operator) got there since the decision:
			// not the run's change, not the run's to roll back.
			o = runbook.Outcome{OK: true, Unchanged: true, Message: fmt.Sprintf("automatic failover already paused=%t (by %s): nothing to do", paused, c.GetPolicy().GetPausedBy())}
			break
		}
		_, err := r.s.propose(ctx, pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED,
			&pgdrv1.SetPaused{Cluster: cluster, Paused: paused, Reason: d.Body.Message}, "coordinator:"+r.s.cfg.Name+" for "+actor)
		o = outcomeOf(err, fmt.Sprintf("automatic failover paused=%t", paused))
	case runbook.ActionSwitchover:
		resp, err := r.s.switchover(cluster, d.Target, actor)
		o = outcomeOf(err, fmt.Sprintf("%s is primary at epoch %d", resp.GetPrimary(), resp.GetEpoch()))
		if err != nil {
			// A switchover that got as far as recording its target may
			// have changed the primary: the view says.
			if c, ok := r.s.fsm.Cluster(cluster); ok && c.GetPrimary() != d.Previous {
				o.Applied = true
			}
		}
	case runbook.ActionBackup:
		if r.s.sched == nil {
			o = runbook.Outcome{Message: "this coordinator runs no backup scheduler"}
			break
		}
		br, err := r.s.sched.RunNow(ctx, cluster, d.Body.Tier, actor)
		if err == nil {
			r.ref(ctx, run.GetId(), d, br.GetId())
			return // the step ends with the backup run (runbook.Next)
		}
		o = outcomeOf(err, "")
	case runbook.ActionDrill:
		dr, err := r.s.runDrillNow(ctx, &pgdrv1.RunDrillRequest{Cluster: cluster, Tier: d.Body.Tier, Node: d.Body.Node}, actor)
		if err == nil {
			r.ref(ctx, run.GetId(), d, dr.GetId())
			return
		}
		o = outcomeOf(err, "")
	case runbook.ActionNotify:
		o = r.notify(ctx, run, d)
	case runbook.ActionCommand:
		o = r.command(ctx, run, d)
	default:
		o = runbook.Outcome{Message: fmt.Sprintf("action %s is not carried out by this coordinator version", d.Body.Action)}
	}
	if ctx.Err() != nil {
		return
	}
	b, err := json.Marshal(o)
	if err != nil {
		return
	}
	r.propose(ctx, "outcome "+d.Step, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Record{Record: &pgdrv1.RunbookRecord{
		RunId: run.GetId(), Step: d.Step, Rollback: d.Kind == runbook.KindRollback, OutcomeJson: b}}})
}

// commandPoll: how often the leader asks a node's agent about a runbook
// command that is still running.
const commandPoll = 2 * time.Second

// commandGrace: how long past a command step's timeout the leader still
// asks the agent, which kills the run at that timeout, for its end.
const commandGrace = 15 * time.Second

// command has the node's agent run the command its config lists under
// the step's name (agent/runcmd: once per key), asking again until it
// ends; the step's own timeout (runbook.Next) bounds the wait.
func (r *runbookRunner) command(ctx context.Context, run *pgdrv1.RunbookRun, d runbook.Decision) runbook.Outcome {
	// Once the agent answered (it has the key), or when a new leader asks
	// again (Reissue), the order only asks: an agent that restarted since
	// forgot the key (and its restart killed the run), and must not start
	// it a second time. Until then a lost order is sent again as it was
	// (the agent starts a key once).
	//
	// The order carries the step's timeout left: the agent kills the run
	// past it (or past the command's own timeout, when shorter), and the
	// leader waits commandGrace more for that end before it gives up (the
	// step's rollback then runs: not beside a run the agent still has).
	reportOnly := d.Reissue
	deadline := time.Now().Add(runbook.ActionTimeout(d.Body))
	for {
		if !time.Now().Before(deadline) && (!reportOnly || !time.Now().Before(deadline.Add(commandGrace))) {
			return runbook.Outcome{Applied: true, Message: fmt.Sprintf("command %s on %s: no result within %s (it may have run)", d.Body.Run, d.Body.Node, runbook.ActionTimeout(d.Body))}
		}
		c, ok := r.s.fsm.Cluster(run.GetCluster())
		if !ok {
			return runbook.Outcome{Message: "cluster " + run.GetCluster() + " is gone"}
		}
		rc := &pgdrv1.RunCommand{Name: d.Body.Run, Key: d.Key, ReportOnly: reportOnly, TimeoutMs: max(time.Until(deadline).Milliseconds(), 1)}
		res, err := r.s.orderResult(ctx, run.GetCluster(), d.Body.Node, c.GetEpoch(),
			&pgdrv1.AgentCommand{Kind: &pgdrv1.AgentCommand_RunCommand{RunCommand: rc}}, 30*time.Second)
		switch {
		case ctx.Err() != nil:
			return runbook.Outcome{}
		case err != nil:
			r.log.Warn("runbook command: asking the agent", "run", run.GetId(), "node", d.Body.Node, "err", err)
		case res.GetPending():
			reportOnly = true
		case res.GetOk():
			return runbook.Outcome{OK: true, Message: fmt.Sprintf("command %s on %s: %s", rc.GetName(), d.Body.Node, res.GetOutput())}
		default:
			// It may have run (a failed exit status): its rollback runs.
			return runbook.Outcome{Applied: true, Message: fmt.Sprintf("command %s on %s: %s; output: %s", rc.GetName(), d.Body.Node, res.GetError(), res.GetOutput())}
		}
		select {
		case <-ctx.Done():
			return runbook.Outcome{}
		case <-time.After(commandPoll):
		}
	}
}

func (r *runbookRunner) ref(ctx context.Context, id string, d runbook.Decision, ref string) {
	r.propose(ctx, "ref "+d.Step, &pgdrv1.RunbookCommand{Op: &pgdrv1.RunbookCommand_Ref{Ref: &pgdrv1.RunbookRef{
		RunId: id, Step: d.Step, Rollback: d.Kind == runbook.KindRollback, Ref: ref}}})
}

func outcomeOf(err error, ok string) runbook.Outcome {
	if err != nil {
		return runbook.Outcome{Message: err.Error()}
	}
	return runbook.Outcome{OK: true, Message: ok}
}

// notify sends a notify step's message to the incident channels that take
// free text (signed webhooks and Slack): paging tools are for incidents.
func (r *runbookRunner) notify(ctx context.Context, run *pgdrv1.RunbookRun, d runbook.Decision) runbook.Outcome {
	in := r.s.incidents
	if in == nil || in.notifier == nil {
		return runbook.Outcome{OK: true, Message: "no notification channel configured: recorded in history only"}
	}
	now := time.Now()
	ev := notify.Event{IncidentID: run.GetId(), DedupKey: d.Key, Cluster: run.GetCluster(), Title: d.Body.Message, Category: "runbook",
		Severity: notify.SeverityLow, Status: notify.StatusTriggered, Source: r.s.cfg.Name, OpenedAt: now, UpdatedAt: now, SendID: d.Key}
	if run.GetIncident() != "" {
		ev.Timeline = "incident " + run.GetIncident()
	}
	sent, failed := 0, ""
	for _, ch := range in.notifier.Channels() {
		if ch.Type() != notify.TypeWebhook && ch.Type() != notify.TypeSlack {
			continue
		}
		if err := in.notifier.Deliver(ctx, ch, ev); err != nil {
			failed += fmt.Sprintf("; %s: %v", ch.Name(), err)
			continue
		}
		sent++
	}
	if failed != "" {
		return runbook.Outcome{Message: fmt.Sprintf("sent to %d channel(s), failed%s", sent, failed)}
	}
	return runbook.Outcome{OK: true, Message: fmt.Sprintf("sent to %d channel(s)", sent)}
}

// view is the runbook's picture of cluster c: members from the leader's
// health view, what is in flight, the recent backups and drills, and the
// repositories as the primary's report says.
func (r *runbookRunner) view(c *pgdrv1.Cluster, runID string) runbook.View {
	v := runbook.View{Cluster: c.GetName(), Leader: r.leadership(), Primary: c.GetPrimary(), Paused: c.GetPolicy().GetPaused(), PausedBy: c.GetPolicy().GetPausedBy()}
	r.mu.Lock()
	v.Settling = time.Since(r.led) < 2*r.s.cfg.Health.StaleAfter.Duration
	r.mu.Unlock()
	// A replica that refuses promotion (it acknowledged a primary's
	// failsafe ping a moment ago) is no switchover target yet; nor one
	// the switchover itself would refuse (rankReplicas: beyond the lag
	// limit, an older timeline, ...; or not streaming): NoTarget.
	samples := r.s.view.snapshot()
	var rejected map[string]string
	if c.GetPrimary() != "" {
		in := r.s.failoverInput(c, samples, time.Now())
		var ranked []string
		ranked, rejected = rankReplicas(in, false)
		for _, n := range ranked {
			if !in.Members[n].Streaming {
				rejected[n] = "not streaming from the primary"
			}
		}
	}
	for _, cs := range r.s.statusOf(c) {
		for _, ms := range cs.GetMembers() {
			lag := ms.GetLagBytes()
			if ms.GetRole() == RolePrimary {
				lag = 0
			}
			refuses := failsafeRefusal(samples[memberKey{c.GetName(), ms.GetName()}].report, "", r.s.cfg.Failover.LeaseTTL.Duration)
			healthy := ms.GetHealthy() && (ms.GetRole() != RoleReplica || refuses == "")
			m := runbook.Member{Name: ms.GetName(), Region: ms.GetRegion(), Role: ms.GetRole(), Healthy: healthy, LagBytes: lag,
				NoFailover: slices.Contains(ms.GetTags(), failover.TagNoFailover)}
			if ms.GetRole() == RoleReplica && ms.GetName() != c.GetPrimary() {
				m.NoTarget = rejected[ms.GetName()]
			}
			v.Members = append(v.Members, m)
		}
	}
	r.s.judge.mu.Lock()
	v.SwitchoverInFlight = r.s.judge.inFlight[c.GetName()]
	r.s.judge.mu.Unlock()
	for _, b := range c.GetBackupRuns() {
		if b.GetResult() == "" {
			v.BackupInFlight = true
		}
		v.Jobs = append(v.Jobs, runbook.Job{ID: b.GetId(), Kind: "backup", Tier: b.GetTier(), Started: b.GetStartedAt().AsTime(), Result: b.GetResult()})
	}
	for _, d := range c.GetDrillRuns() {
		if d.GetResult() == "" {
			v.DrillInFlight = true
		}
		v.Jobs = append(v.Jobs, runbook.Job{ID: d.GetId(), Kind: "drill", Tier: d.GetTier(), Started: d.GetStartedAt().AsTime(), Result: d.GetResult()})
	}
	p, _ := policy.Effective(c)
	for _, t := range p.Tiers {
		v.Tiers = append(v.Tiers, t.Name)
	}
	for _, other := range r.s.fsm.RunbookRunsInFlight(c.GetName()) {
		if other.GetId() != runID {
			v.OtherRun = other.GetRunbook() + " (" + other.GetId() + ")"
		}
	}
	smp, ok := samples[memberKey{c.GetName(), c.GetPrimary()}]
	switch {
	case !ok:
		v.ReposUnknown = fmt.Sprintf("no report from the primary %s", c.GetPrimary())
	case time.Since(smp.at) > r.s.cfg.Health.StaleAfter.Duration:
		v.ReposUnknown = fmt.Sprintf("the primary %s's last report is %s old", c.GetPrimary(), time.Since(smp.at).Round(time.Second))
	default:
		for _, a := range smp.report.GetArchiveRpo() {
			v.Repos = append(v.Repos, runbook.Repo{Name: a.GetRepository(), CaughtUp: a.GetReadySegments() == 0 && a.GetBytes() <= repoCaughtUpBytes})
		}
	}
	return v
}
