package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Server is what the Runner needs of the coordinator it runs in (the Raft
// leader): the replicated clusters, the members' health as the leader
// judges it, Raft writes and the agents' command streams.
type Server interface {
	// ClusterNames lists the clusters, sorted.
	ClusterNames() []string
	// Cluster returns a copy of the replicated cluster; false when it is
	// not known.
	Cluster(name string) (*pgdrv1.Cluster, bool)
	// Members are c's members as the leader judges them now (its health
	// view: dearer than Cluster, so asked only where a decision needs it).
	Members(c *pgdrv1.Cluster) []Member
	// Record writes rec through Raft as actor; a rejection by the FSM is
	// an error.
	Record(ctx context.Context, actor string, rec *pgdrv1.RecordBackupRun) error
	// Order writes cmd to the command stream of cmd.Node's agent without
	// waiting for its result; an error when it could not be written.
	Order(ctx context.Context, cmd *pgdrv1.AgentCommand) error
	// Leading reports whether this coordinator is the Raft leader and has
	// applied everything before its leadership (its state is the
	// cluster's): an answer about a run it does not know is then stale,
	// not early.
	Leading() bool
	// Ready reports whether the scheduler may write its records: every
	// voter runs a version that knows them; else why not.
	Ready() (bool, string)
}

// Errors of Answer, RunNow and Cancel.
var (
	// ErrRetry: the answer was not recorded (a Raft write failed, or this
	// coordinator does not know the run yet); the agent must send it
	// again, to the leader.
	ErrRetry = errors.New("backup answer not recorded: send it again")
	// ErrNotReady: the scheduler does not run (Server.Ready).
	ErrNotReady = errors.New("the backup scheduler is not running")
	// ErrNoRun: no such run in flight.
	ErrNoRun = errors.New("no such backup run in flight")
)

// Defaults of Config.
const (
	DefaultEvery = 5 * time.Second
	DefaultGrace = time.Minute
	// DefaultStartBudget is how long an agent may take to start a Backup
	// order before refusing it (AgentCommand.deadline).
	DefaultStartBudget = time.Minute
	// DefaultCleanup bounds how long the leader waits for the agent's
	// answer to a cancel order (the agent gives its clean-up 30 s).
	DefaultCleanup = 2 * time.Minute
	// DefaultRetry is how long the server's scheduler waits before trying
	// again a tier whose run never started.
	DefaultRetry = 30 * time.Second
)

// Config configures a Runner. Server and Name are required.
type Config struct {
	Server Server
	// Name is this coordinator's name; scheduled runs are recorded with
	// the actor "coordinator:<Name>".
	Name string
	Log  *slog.Logger
	// Every is the time between two evaluations of every cluster.
	Every time.Duration
	// Grace is Input.Grace.
	Grace time.Duration
	// WarmUp is how long Run waits before its first evaluation: a new
	// leader starts with no health reports, and must not judge every
	// member unhealthy (and skip a standby-only tier's slot) before the
	// agents have reconnected and reported. The server passes its
	// health.stale_after.
	WarmUp time.Duration
	// StartBudget is DefaultStartBudget when zero.
	StartBudget time.Duration
	// Cleanup is Input.Cleanup (DefaultCleanup when zero).
	Cleanup time.Duration
	// Retry is Input.Retry (0: a run that never started is tried again
	// on the next tick). The server passes DefaultRetry.
	Retry time.Duration
	// NewID returns a new run id (random hex when nil).
	NewID func() string
	// Now is time.Now when nil.
	Now func() time.Time
}

// Runner carries out the scheduler's decisions on the Raft leader: every
// Config.Every it evaluates each cluster with Decide and records and
// orders what it says; RunNow does the same for an operator's run, and
// Answer records what an agent answered. One decision at a time, so that
// a tick and a manual run never both start a run (the FSM refuses a
// second run in flight anyway).
type Runner struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex
	// ordered: the runs this leadership ordered (or ordered again), by
	// id; see resend. cancelSent: the runs whose cancel order this
	// leadership wrote.
	ordered, cancelSent map[string]bool
	// due and cleanupBy: when each run in flight is over its timeout, and
	// when a cleaning one's clean-up deadline passes, on this leader's
	// clock (monotonic in production), set when this leadership first
	// saw the run: an inherited run gets what was left of it then, never
	// less than zero nor more than the whole.
	due, cleanupBy map[string]time.Time
	// retSent: the retention this leadership last ordered each run in
	// flight with; a run is ordered again when its cluster's retention
	// changed since (see refreshRetention).
	retSent map[string]*pgdrv1.BackupRetention
	// cancels: cancel orders of runs an operator ended, not yet written
	// (sent when the agent's stream opens), by run id.
	cancels map[string]*pgdrv1.AgentCommand
	// gate: why the scheduler last did not run ("" = it ran).
	gate string
}

// NewRunner returns a Runner; Run starts its ticks.
func NewRunner(cfg Config) *Runner {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.StartBudget <= 0 {
		cfg.StartBudget = DefaultStartBudget
	}
	if cfg.Cleanup <= 0 {
		cfg.Cleanup = DefaultCleanup
	}
	if cfg.NewID == nil {
		cfg.NewID = func() string {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			return hex.EncodeToString(b)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Runner{cfg: cfg, log: cfg.Log.With("component", "backup-scheduler")}
	r.reset()
	return r
}

// reset forgets what the previous leadership knew. r.mu is held (or r is
// new).
func (r *Runner) reset() {
	r.ordered, r.cancelSent = map[string]bool{}, map[string]bool{}
	r.due, r.cleanupBy = map[string]time.Time{}, map[string]time.Time{}
	r.cancels = map[string]*pgdrv1.AgentCommand{}
	r.retSent = map[string]*pgdrv1.BackupRetention{}
	r.gate = ""
}

// adopt notes the runs in flight of c this leadership has not seen yet,
// with their deadlines from now (see Runner.due), and forgets the ended
// ones. r.mu is held.
func (r *Runner) adopt(c *pgdrv1.Cluster, now time.Time) {
	for _, br := range c.GetBackupRuns() {
		id := br.GetId()
		if br.GetResult() != "" {
			delete(r.due, id)
			delete(r.cleanupBy, id)
			delete(r.ordered, id)
			delete(r.cancelSent, id)
			delete(r.retSent, id)
			continue
		}
		if _, ok := r.due[id]; !ok {
			timeout := time.Duration(br.GetTimeoutMs()) * time.Millisecond
			r.due[id] = now.Add(left(br.GetStartedAt().AsTime().Add(timeout), now, timeout))
		}
		if _, ok := r.cleanupBy[id]; !ok && br.GetCancelAt() != nil {
			r.cleanupBy[id] = now.Add(left(br.GetCancelAt().AsTime().Add(r.cfg.Cleanup), now, r.cfg.Cleanup))
		}
	}
}

// left is end − now within [0, whole].
func left(end, now time.Time, whole time.Duration) time.Duration {
	return min(max(end.Sub(now), 0), whole)
}

// Run evaluates every cluster each Config.Every, after Config.WarmUp,
// until ctx ends (the end of this node's leadership).
func (r *Runner) Run(ctx context.Context) {
	r.mu.Lock()
	r.reset() // a new leadership: runs in flight are inherited
	// Their time left counts from now, this leader's takeover, on its
	// clock.
	now := r.cfg.Now()
	for _, name := range r.cfg.Server.ClusterNames() {
		if c, ok := r.cfg.Server.Cluster(name); ok {
			r.adopt(c, now)
		}
	}
	r.mu.Unlock()
	if r.cfg.WarmUp > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.WarmUp):
		}
	}
	t := time.NewTicker(r.cfg.Every)
	defer t.Stop()
	for {
		r.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick evaluates every cluster once.
func (r *Runner) Tick(ctx context.Context) {
	if !r.ready() {
		return
	}
	for _, name := range r.cfg.Server.ClusterNames() {
		if ctx.Err() != nil {
			return
		}
		if err := r.tickCluster(ctx, name); err != nil {
			r.log.Warn("backup scheduling failed", "cluster", name, "err", err)
		}
	}
}

// ready checks Server.Ready, logging a change.
func (r *Runner) ready() bool {
	ok, why := r.cfg.Server.Ready()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok && r.gate != why {
		r.log.Warn("the backup scheduler does not run", "reason", why)
	} else if ok && r.gate != "" {
		r.log.Info("the backup scheduler runs again")
	}
	r.gate = why
	if ok {
		r.gate = ""
	}
	return ok
}

// input is the decision's input for c now, with this leadership's
// deadlines. r.mu is held.
func (r *Runner) input(c *pgdrv1.Cluster, now time.Time) Input {
	r.adopt(c, now)
	in := InputOf(c, r.cfg.Server.Members(c), now, r.cfg.Grace)
	in.Cleanup, in.Retry = r.cfg.Cleanup, r.cfg.Retry
	in.Known = make([]string, 0, len(c.GetMembers()))
	for n := range c.GetMembers() {
		in.Known = append(in.Known, n)
	}
	for i := range in.Runs {
		in.Runs[i].Due = r.due[in.Runs[i].ID]
		in.Runs[i].CleanupBy = r.cleanupBy[in.Runs[i].ID]
	}
	return in
}

// InputOf is the decision's input for cluster c with members, at now.
func InputOf(c *pgdrv1.Cluster, members []Member, now time.Time, grace time.Duration) Input {
	p, _ := policy.Effective(c)
	p.Normalize()
	in := Input{Now: now, Policy: p, Members: members, Primary: c.GetPrimary(), Grace: grace,
		Paused: c.GetPolicy().GetPaused()}
	if t := c.GetCreatedAt(); t != nil {
		in.Since = t.AsTime()
	}
	for _, br := range c.GetBackupRuns() {
		in.Runs = append(in.Runs, RunOf(br))
	}
	return in
}

// RunOf is a recorded run as Decide reads it.
func RunOf(br *pgdrv1.BackupRun) Run {
	run := Run{ID: br.GetId(), Tier: br.GetTier(), Type: br.GetType(), Node: br.GetNode(), Result: br.GetResult(),
		Timeout: time.Duration(br.GetTimeoutMs()) * time.Millisecond}
	if t := br.GetSlot(); t != nil {
		run.Slot = t.AsTime()
	}
	if t := br.GetStartedAt(); t != nil {
		run.Started = t.AsTime()
	}
	if t := br.GetFinishedAt(); t != nil {
		run.Finished = t.AsTime()
	}
	if t := br.GetCancelAt(); t != nil {
		run.CancelAt, run.CancelResult = t.AsTime(), br.GetCancelResult()
	}
	return run
}

func (r *Runner) actor() string { return "coordinator:" + r.cfg.Name }

func (r *Runner) tickCluster(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cfg.Server.Cluster(name)
	if !ok {
		return nil
	}
	d := Decide(r.input(c, r.cfg.Now()))
	log := r.log.With("cluster", name)
	switch d.Action {
	case None:
		log.Debug("no backup to start", "reason", d.Reason())
		if err := r.resend(ctx, c); err != nil {
			return err
		}
		return r.refreshRetention(ctx, c)
	case Cancel:
		log.Warn("backup run timed out: cancelling it", "run", d.RunID, "tier", d.Tier, "node", d.Node, "reason", d.Reason())
		if err := r.cfg.Server.Record(ctx, r.actor(), &pgdrv1.RecordBackupRun{Cluster: name, Phase: &pgdrv1.RecordBackupRun_Step{
			Step: &pgdrv1.BackupRunStep{Id: d.RunID, Step: "cancel", Result: d.Result, Note: "no result within the timeout: " + d.Reason()}}}); err != nil {
			return err
		}
		r.cleanupBy[d.RunID] = r.cfg.Now().Add(r.cfg.Cleanup)
		c, _ = r.cfg.Server.Cluster(name)
		return r.resend(ctx, c)
	case End:
		log.Warn("backup run ended without its agent's answer", "run", d.RunID, "tier", d.Tier, "node", d.Node, "result", d.Result, "reason", d.Reason())
		return r.record(ctx, r.actor(), name, &pgdrv1.BackupRunResult{Id: d.RunID, Result: d.Result, Error: d.Reason()})
	case Skip:
		log.Warn("backup slot skipped", "tier", d.Tier, "reason", d.Reason())
		_, err := r.start(ctx, c, d, r.actor())
		return err
	}
	log.Info("starting backup run", "tier", d.Tier, "type", d.Type, "node", d.Node, "reason", d.Reason())
	_, err := r.start(ctx, c, d, r.actor())
	return err
}

// resend orders again, once per leadership, a run in flight that this
// leadership did not order and that its agent has not accepted: the
// leader that recorded the intent may have died before the order went
// out, and the run would otherwise block the cluster's backups until its
// timeout (hours for a full). The order carries the same run id, and an
// agent carries a Backup order out at most once per run id (answering a
// repeat with the state of the run it has), so a repeat of an order that
// did arrive starts nothing. A repeat that cannot be written is left for
// the next tick of a later leadership, or the timeout.
//
// The repeat carries only what is left of the run's timeout (its start +
// timeout − now), since the agent counts an order's timeout from its
// arrival: with the tier's whole timeout a late repeat would still run
// after this leader recorded the run timed out and started another one,
// maybe on another node (invariant 9). A run with nothing left is not
// ordered again: Decide records it timed out once the grace has passed
// too, as for any run past its timeout (its agent may have the first
// order after all, its acceptance lost with the old leader, and still be
// cleaning up).
func (r *Runner) resend(ctx context.Context, c *pgdrv1.Cluster) error {
	if c.GetPolicy().GetPaused() {
		return nil // paused: no order goes out
	}
	for _, run := range c.GetBackupRuns() {
		if run.GetResult() == "" && run.GetCancelAt() != nil && !r.cancelSent[run.GetId()] {
			if err := r.cfg.Server.Order(ctx, r.cancelOrder(c, run.GetNode(), run.GetId(), run.GetCancelNote())); err != nil {
				return fmt.Errorf("sending the cancel order of backup run %s: %w", run.GetId(), err)
			}
			r.cancelSent[run.GetId()] = true
			continue
		}
		if run.GetResult() != "" || run.GetCancelAt() != nil || run.GetAcceptedAt() != nil || r.ordered[run.GetId()] {
			continue
		}
		now := r.cfg.Now()
		timeout := time.Duration(run.GetTimeoutMs()) * time.Millisecond
		if timeout > 0 {
			// Whole milliseconds, rounded down: the order never outlasts
			// the run's timeout.
			left := r.left(run, now)
			if left <= 0 {
				r.ordered[run.GetId()] = true
				r.log.Info("not ordering again a backup run in flight that a previous leader ordered: nothing is left of its timeout; it is recorded timed out after the grace",
					"cluster", c.GetName(), "run", run.GetId(), "tier", run.GetTier(), "node", run.GetNode(), "timeout", duration.Format(timeout))
				continue
			}
			timeout = left
		}
		r.log.Info("ordering again a backup run in flight that a previous leader ordered", "cluster", c.GetName(),
			"run", run.GetId(), "tier", run.GetTier(), "node", run.GetNode(), "timeout_left", duration.Format(timeout))
		if err := r.sendOrder(ctx, c, run, timeout); err != nil {
			// Not written (the agent's stream is not open yet, as right
			// after a leader change): tried again on the next tick, with
			// what is then left of the timeout.
			return err
		}
		r.ordered[run.GetId()] = true
		return nil
	}
	return nil
}

// left is what is left of run's timeout at now on this leader's clock,
// in whole milliseconds rounded down (an order never outlasts the run's
// timeout). r.mu is held.
func (r *Runner) left(run *pgdrv1.BackupRun, now time.Time) time.Duration {
	due, ok := r.due[run.GetId()]
	if !ok {
		timeout := time.Duration(run.GetTimeoutMs()) * time.Millisecond
		due = now.Add(left(run.GetStartedAt().AsTime().Add(timeout), now, timeout))
		r.due[run.GetId()] = due
	}
	return due.Sub(now).Truncate(time.Millisecond)
}

// cancelOrder is the order that cancels run id on node.
func (r *Runner) cancelOrder(c *pgdrv1.Cluster, node, id, why string) *pgdrv1.AgentCommand {
	now := r.cfg.Now()
	cmdID := id + "-cancel"
	if len(cmdID) > maxCommandID {
		cmdID = r.cfg.NewID()
	}
	return &pgdrv1.AgentCommand{Id: cmdID, Cluster: c.GetName(), Node: node, Epoch: c.GetEpoch(),
		IssuedAt: timestamppb.New(now), Deadline: timestamppb.New(now.Add(r.cfg.StartBudget)),
		Kind: &pgdrv1.AgentCommand_Backup{Backup: &pgdrv1.Backup{RunId: id, Cancel: true, CancelReason: why}}}
}

// maxCommandID bounds command ids (as the coordinator's API does).
const maxCommandID = 64

// StreamOpened orders again the runs in flight on node of cluster, whose
// agent's command stream just opened on this leader: accepted ones too
// (the agent answers a run id it has with its state or final result, so
// an answer lost with a dropped stream or a failed record comes again),
// with only what is left of their timeout; a cleaning run gets its
// cancel order again, and so does a run an operator cancelled while the
// stream was closed.
func (r *Runner) StreamOpened(ctx context.Context, cluster, node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cfg.Server.Cluster(cluster)
	if !ok {
		return
	}
	now := r.cfg.Now()
	r.adopt(c, now)
	log := r.log.With("cluster", cluster, "node", node)
	for id, cmd := range r.cancels {
		if cmd.GetCluster() == cluster && cmd.GetNode() == node {
			if err := r.cfg.Server.Order(ctx, cmd); err == nil {
				delete(r.cancels, id)
			}
		}
	}
	if c.GetPolicy().GetPaused() {
		return
	}
	for _, run := range c.GetBackupRuns() {
		if run.GetResult() != "" || run.GetNode() != node {
			continue
		}
		if run.GetCancelAt() != nil {
			if err := r.cfg.Server.Order(ctx, r.cancelOrder(c, node, run.GetId(), run.GetCancelNote())); err != nil {
				log.Warn("sending a backup run's cancel order again", "run", run.GetId(), "err", err)
				continue
			}
			r.cancelSent[run.GetId()] = true
			continue
		}
		left := r.left(run, now)
		if left <= 0 {
			continue // over its timeout: Decide cancels it after the grace
		}
		if err := r.sendOrder(ctx, c, run, left); err != nil {
			log.Warn("ordering a backup run in flight again", "run", run.GetId(), "err", err)
			continue
		}
		r.ordered[run.GetId()] = true
		log.Info("ordered a backup run in flight again: its agent's command stream opened", "run", run.GetId(),
			"timeout_left", duration.Format(left))
	}
}

// order is the Backup order of run, with timeout (the run's whole
// timeout for its first order, what is left of it for a repeat).
func (r *Runner) order(c *pgdrv1.Cluster, run *pgdrv1.BackupRun, timeout time.Duration) *pgdrv1.AgentCommand {
	now := r.cfg.Now()
	return &pgdrv1.AgentCommand{Id: run.GetId(), Cluster: c.GetName(), Node: run.GetNode(), Epoch: c.GetEpoch(),
		IssuedAt: timestamppb.New(now), Deadline: timestamppb.New(now.Add(r.cfg.StartBudget)),
		Kind: &pgdrv1.AgentCommand_Backup{Backup: &pgdrv1.Backup{RunId: run.GetId(), Tier: run.GetTier(), Type: run.GetType(),
			Repositories: slices.Clone(run.GetRepositories()), TimeoutMs: timeout.Milliseconds(), Retention: Retention(c)}}}
}

// sendOrder writes run's Backup order with timeout and notes the
// retention it carried. r.mu is held.
func (r *Runner) sendOrder(ctx context.Context, c *pgdrv1.Cluster, run *pgdrv1.BackupRun, timeout time.Duration) error {
	cmd := r.order(c, run, timeout)
	if err := r.cfg.Server.Order(ctx, cmd); err != nil {
		return err
	}
	r.retSent[run.GetId()] = cmd.GetBackup().GetRetention()
	return nil
}

// refreshRetention orders again, with what is left of its timeout, a run
// in flight of c whose cluster's retention changed since this leadership
// last ordered it (or that this leadership never ordered): the agent
// answers the repeat with the run's state and keeps the newest order's
// retention for the expiry after the backup, which must not delete what
// an operator's policy edit during the run now keeps. Not while paused
// (no order goes out), nor for a run cleaning up. r.mu is held.
func (r *Runner) refreshRetention(ctx context.Context, c *pgdrv1.Cluster) error {
	if c.GetPolicy().GetPaused() {
		return nil
	}
	want := Retention(c)
	for _, run := range c.GetBackupRuns() {
		if run.GetResult() != "" || run.GetCancelAt() != nil {
			continue
		}
		if sent, ok := r.retSent[run.GetId()]; ok && proto.Equal(sent, want) {
			continue
		}
		left := r.left(run, r.cfg.Now())
		if left <= 0 {
			continue // over its timeout: Decide cancels it after the grace
		}
		if err := r.sendOrder(ctx, c, run, left); err != nil {
			// Its agent's stream is not open: StreamOpened orders it
			// again, with the retention of then, when it opens.
			r.log.Debug("ordering a backup run again with the cluster's retention", "cluster", c.GetName(), "run", run.GetId(), "err", err)
			continue
		}
		r.ordered[run.GetId()] = true
		r.log.Info("ordered a backup run in flight again with the cluster's current retention", "cluster", c.GetName(),
			"run", run.GetId(), "node", run.GetNode(), "timeout_left", duration.Format(left))
	}
	return nil
}

// Retention is the expiry the agent runs after a successful backup of
// c: each tier's keep_count/keep_age (expire --keep-tier NAME=...) and
// the PITR window, from c's effective policy.
func Retention(c *pgdrv1.Cluster) *pgdrv1.BackupRetention {
	p, _ := policy.Effective(c)
	out := &pgdrv1.BackupRetention{PitrWindowMs: p.PITRWindow.Milliseconds()}
	for _, t := range p.Tiers {
		out.Tiers = append(out.Tiers, &pgdrv1.TierRetention{Tier: t.Name, KeepCount: t.KeepCount, KeepAgeMs: t.KeepAge.Milliseconds()})
	}
	return out
}

// start records d's intent (or skipped slot) and, for a Start, orders the
// agent; an order that cannot be written ends the run as failed at once.
// It returns the run as recorded.
func (r *Runner) start(ctx context.Context, c *pgdrv1.Cluster, d Decision, actor string) (*pgdrv1.BackupRun, error) {
	run := &pgdrv1.BackupRun{Id: r.cfg.NewID(), Tier: d.Tier, Type: d.Type, Node: d.Node, Missed: uint32(min(d.Missed, 1<<31)),
		TimeoutMs: d.Timeout.Milliseconds(), Repositories: slices.Clone(d.Repos), Reason: d.Reason()}
	if !d.Slot.IsZero() {
		run.Slot = timestamppb.New(d.Slot)
	}
	if d.Action == Skip {
		run.Result = ResultSkipped
	}
	name := c.GetName()
	if err := r.cfg.Server.Record(ctx, actor, &pgdrv1.RecordBackupRun{Cluster: name,
		Phase: &pgdrv1.RecordBackupRun_Intent{Intent: run}}); err != nil {
		return nil, fmt.Errorf("recording the intent of a %s run of tier %s: %w", d.Type, d.Tier, err)
	}
	if d.Action == Skip {
		return run, nil
	}
	r.ordered[run.Id] = true
	r.due[run.Id] = r.cfg.Now().Add(d.Timeout)
	if err := r.sendOrder(ctx, c, run, time.Duration(run.GetTimeoutMs())*time.Millisecond); err != nil {
		// Never started: it does not count as the tier's run of its slot
		// (the tier is tried again on the next tick).
		run.Result, run.Error = ResultNotStarted, "order not sent: "+err.Error()
		if rerr := r.record(ctx, actor, name, &pgdrv1.BackupRunResult{Id: run.Id, Result: ResultNotStarted, Error: run.Error}); rerr != nil {
			// Still in flight, never ordered: resend orders it on the
			// next tick (else it would wait for its whole timeout).
			delete(r.ordered, run.Id)
			return run, errors.Join(err, rerr)
		}
		return run, nil
	}
	if err := r.cfg.Server.Record(ctx, actor, &pgdrv1.RecordBackupRun{Cluster: name,
		Phase: &pgdrv1.RecordBackupRun_Step{Step: &pgdrv1.BackupRunStep{Id: run.Id, Step: "sent"}}}); err != nil {
		// The run stays in flight until the agent answers or it times out.
		r.log.Warn("recording that a backup order went out", "cluster", name, "run", run.Id, "err", err)
	}
	return run, nil
}

func (r *Runner) record(ctx context.Context, actor, cluster string, res *pgdrv1.BackupRunResult) error {
	return r.cfg.Server.Record(ctx, actor, &pgdrv1.RecordBackupRun{Cluster: cluster,
		Phase: &pgdrv1.RecordBackupRun_Result{Result: res}})
}

// RunNow has the leader run tier of cluster now for actor (an operator):
// the run as its intent was recorded, or an error wrapping ErrUnknownTier,
// ErrBusy or ErrNoCandidate (see Manual), or the Raft error.
func (r *Runner) RunNow(ctx context.Context, cluster, tier, actor string) (*pgdrv1.BackupRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok, why := r.cfg.Server.Ready(); !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotReady, why)
	}
	c, ok := r.cfg.Server.Cluster(cluster)
	if !ok {
		return nil, fmt.Errorf("cluster %q is not known", cluster)
	}
	d, err := Manual(r.input(c, r.cfg.Now()), tier)
	if err != nil {
		return nil, err
	}
	d.Reasons[0] = fmt.Sprintf("tier %s run on request of %s", d.Tier, actor)
	r.log.Info("starting backup run on request", "cluster", cluster, "tier", d.Tier, "type", d.Type, "node", d.Node, "actor", actor)
	return r.start(ctx, c, d, actor)
}

// Answer records what an agent answered to a Backup order: pending (the
// backup runs) as the step "accepted", anything else as the run's result:
// ok, failed, not_started (the agent refused it before starting), or, for
// a run cleaning up after a cancel order, the cancel's result (ok when
// the backup was made after all). The run is named by the answer's
// backup report (every answer of a Backup order carries its run id) or,
// for older agents, by the command id. An answer about a run that ended
// or that no run names is ignored: it reports false. A leader that did
// not send the order records the answer too, so a run survives a change
// of leader. The error wraps ErrRetry when the answer must come again: a
// Raft write failed, or this coordinator is not the caught-up leader and
// does not know the run (a follower, a stale leader), or the answer is
// final while the scheduler is gated (Server.Ready: a voter may not know
// its record).
func (r *Runner) Answer(ctx context.Context, res *pgdrv1.CommandResult) (bool, error) {
	rep := res.GetBackup()
	id := rep.GetRunId()
	if id == "" {
		id = res.GetId()
	}
	var run *pgdrv1.BackupRun
	c, ok := r.cfg.Server.Cluster(res.GetCluster())
	if ok {
		for _, br := range c.GetBackupRuns() {
			if br.GetId() == id && br.GetNode() == res.GetNode() {
				run = br
			}
		}
	}
	if run == nil {
		if rep.GetRunId() != "" && !r.cfg.Server.Leading() {
			return false, fmt.Errorf("%w: backup run %s is not known to this coordinator, which is not the leader", ErrRetry, id)
		}
		return false, nil
	}
	if run.GetResult() != "" {
		return false, nil
	}
	actor := "agent:" + res.GetNode()
	if res.GetPending() {
		if run.GetAcceptedAt() != nil || run.GetCancelAt() != nil {
			return true, nil // a repeat's answer, or the cancel's: nothing new
		}
		if err := r.cfg.Server.Record(ctx, actor, &pgdrv1.RecordBackupRun{Cluster: c.GetName(),
			Phase: &pgdrv1.RecordBackupRun_Step{Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "accepted"}}}); err != nil {
			return true, fmt.Errorf("%w: recording that backup run %s was accepted: %w", ErrRetry, run.GetId(), err)
		}
		return true, nil
	}
	if ok, why := r.cfg.Server.Ready(); !ok {
		// A voter may not know the final record's words (not_started,
		// the type taken, the expiry): it would refuse or half-apply it
		// and its state diverge. The agent sends it again.
		return true, fmt.Errorf("%w: the result of backup run %s waits for the scheduler's gate: %s", ErrRetry, run.GetId(), why)
	}
	typ := rep.GetType()
	if typ != policy.TypeFull && typ != policy.TypeDiff && typ != policy.TypeIncr {
		typ = "" // not reported (or nonsense): the intent's type stays
	}
	out := &pgdrv1.BackupRunResult{Id: run.GetId(), Result: ResultOK, Error: res.GetError(), Type: typ,
		SizeBytes: rep.GetSizeBytes(), StoredBytes: rep.GetStoredBytes(), BackupId: rep.GetBackupId(), Expiry: rep.GetExpiry()}
	switch {
	case res.GetOk():
	case run.GetCancelAt() != nil:
		out.Result = orResult(run.GetCancelResult())
		out.Error = run.GetCancelNote() + "; the agent: " + res.GetError()
	case rep.GetNotStarted():
		out.Result = ResultNotStarted
	default:
		out.Result = ResultFailed
	}
	level := slog.LevelInfo
	if !res.GetOk() {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "backup run ended", "cluster", c.GetName(), "run", run.GetId(), "tier", run.GetTier(),
		"node", run.GetNode(), "result", out.Result, "err", out.Error,
		"took", duration.Format(r.cfg.Now().Sub(run.GetStartedAt().AsTime()).Round(time.Second)))
	if err := r.record(ctx, actor, c.GetName(), out); err != nil {
		return true, fmt.Errorf("%w: recording the result of backup run %s: %w", ErrRetry, run.GetId(), err)
	}
	return true, nil
}

// Cancel cancels a run in flight of cluster (runID; "" = the cluster's
// run in flight) on request of actor, with note, and sends its agent a
// cancel order (again when its stream opens, if it cannot be written
// now). The run is not ended at once: it cleans up (the step "cancel",
// result cancelled) until its agent answers or its clean-up deadline
// passes, so that no other backup of the cluster starts while that agent
// still removes what it wrote. A run already cleaning up is returned as
// it is. While the scheduler is gated (Server.Ready), when no tick would
// end a cleaning run and an older voter would not know the step, the run
// is ended at once as cancelled. It returns the run as recorded, or an
// error wrapping ErrNoRun.
func (r *Runner) Cancel(ctx context.Context, cluster, runID, actor, note string) (*pgdrv1.BackupRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cfg.Server.Cluster(cluster)
	if !ok {
		return nil, fmt.Errorf("cluster %q is not known", cluster)
	}
	var run *pgdrv1.BackupRun
	for _, br := range c.GetBackupRuns() {
		if br.GetResult() == "" && (runID == "" || br.GetId() == runID) {
			run = br
		}
	}
	if run == nil {
		if runID == "" {
			return nil, fmt.Errorf("%w: cluster %s has no backup run in flight", ErrNoRun, cluster)
		}
		return nil, fmt.Errorf("%w: cluster %s has no backup run %s in flight (pgdrctl backups)", ErrNoRun, cluster, runID)
	}
	why := "cancelled by " + actor
	if note != "" {
		why += ": " + note
	}
	ready, _ := r.cfg.Server.Ready()
	switch {
	case run.GetCancelAt() != nil:
		// Already cleaning up: its clean-up deadline ends it.
		why = run.GetCancelNote()
	case ready:
		if err := r.cfg.Server.Record(ctx, actor, &pgdrv1.RecordBackupRun{Cluster: cluster, Phase: &pgdrv1.RecordBackupRun_Step{
			Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "cancel", Result: ResultCancelled, Note: why}}}); err != nil {
			return nil, err
		}
		r.cleanupBy[run.GetId()] = r.cfg.Now().Add(r.cfg.Cleanup)
		r.log.Warn("backup run cancelled: it cleans up until its agent answers", "cluster", cluster, "run", run.GetId(),
			"node", run.GetNode(), "actor", actor, "note", note)
	default:
		if err := r.record(ctx, actor, cluster, &pgdrv1.BackupRunResult{Id: run.GetId(), Result: ResultCancelled, Error: why}); err != nil {
			return nil, err
		}
		r.log.Warn("backup run cancelled (ended at once: the scheduler is gated)", "cluster", cluster, "run", run.GetId(),
			"node", run.GetNode(), "actor", actor, "note", note)
	}
	cmd := r.cancelOrder(c, run.GetNode(), run.GetId(), why)
	if err := r.cfg.Server.Order(ctx, cmd); err != nil {
		if len(r.cancels) < 1024 { // bounded: one per cancelled run, forgotten with the leadership
			r.cancels[run.GetId()] = cmd
		}
	} else {
		r.cancelSent[run.GetId()] = true
	}
	if c, ok := r.cfg.Server.Cluster(cluster); ok {
		for _, br := range c.GetBackupRuns() {
			if br.GetId() == run.GetId() {
				return br, nil
			}
		}
	}
	return run, nil
}
