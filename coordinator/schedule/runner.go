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
}

// Defaults of Config.
const (
	DefaultEvery = 5 * time.Second
	DefaultGrace = time.Minute
	// DefaultStartBudget is how long an agent may take to start a Backup
	// order before refusing it (AgentCommand.deadline).
	DefaultStartBudget = time.Minute
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
	// id; see resend.
	ordered map[string]bool
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
	return &Runner{cfg: cfg, log: cfg.Log.With("component", "backup-scheduler"), ordered: map[string]bool{}}
}

// Run evaluates every cluster each Config.Every, after Config.WarmUp,
// until ctx ends (the end of this node's leadership).
func (r *Runner) Run(ctx context.Context) {
	r.mu.Lock()
	clear(r.ordered) // a new leadership: runs in flight are inherited
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
	for _, name := range r.cfg.Server.ClusterNames() {
		if ctx.Err() != nil {
			return
		}
		if err := r.tickCluster(ctx, name); err != nil {
			r.log.Warn("backup scheduling failed", "cluster", name, "err", err)
		}
	}
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
	d := Decide(InputOf(c, r.cfg.Server.Members(c), r.cfg.Now(), r.cfg.Grace))
	log := r.log.With("cluster", name)
	switch d.Action {
	case None:
		log.Debug("no backup to start", "reason", d.Reason())
		return r.resend(ctx, c)
	case Cancel:
		log.Warn("backup run timed out", "run", d.RunID, "tier", d.Tier, "node", d.Node, "reason", d.Reason())
		return r.cfg.Server.Record(ctx, r.actor(), &pgdrv1.RecordBackupRun{Cluster: name, Phase: &pgdrv1.RecordBackupRun_Result{
			Result: &pgdrv1.BackupRunResult{Id: d.RunID, Result: d.Result, Error: "no result within the timeout: " + d.Reason()}}})
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
		if run.GetResult() != "" || run.GetAcceptedAt() != nil || r.ordered[run.GetId()] {
			continue
		}
		now := r.cfg.Now()
		timeout := time.Duration(run.GetTimeoutMs()) * time.Millisecond
		if timeout > 0 {
			// Whole milliseconds, rounded down: the order never outlasts
			// the run's timeout.
			left := run.GetStartedAt().AsTime().Add(timeout).Sub(now).Truncate(time.Millisecond)
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
		if err := r.cfg.Server.Order(ctx, r.order(c, run, timeout)); err != nil {
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

// order is the Backup order of run, with timeout (the run's whole
// timeout for its first order, what is left of it for a repeat).
func (r *Runner) order(c *pgdrv1.Cluster, run *pgdrv1.BackupRun, timeout time.Duration) *pgdrv1.AgentCommand {
	now := r.cfg.Now()
	return &pgdrv1.AgentCommand{Id: run.GetId(), Cluster: c.GetName(), Node: run.GetNode(), Epoch: c.GetEpoch(),
		IssuedAt: timestamppb.New(now), Deadline: timestamppb.New(now.Add(r.cfg.StartBudget)),
		Kind: &pgdrv1.AgentCommand_Backup{Backup: &pgdrv1.Backup{RunId: run.GetId(), Tier: run.GetTier(), Type: run.GetType(),
			Repositories: slices.Clone(run.GetRepositories()), TimeoutMs: timeout.Milliseconds()}}}
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
	if err := r.cfg.Server.Order(ctx, r.order(c, run, time.Duration(run.GetTimeoutMs())*time.Millisecond)); err != nil {
		run.Result, run.Error = ResultFailed, "order not sent: "+err.Error()
		if rerr := r.record(ctx, actor, name, &pgdrv1.BackupRunResult{Id: run.Id, Result: ResultFailed, Error: run.Error}); rerr != nil {
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
	c, ok := r.cfg.Server.Cluster(cluster)
	if !ok {
		return nil, fmt.Errorf("cluster %q is not known", cluster)
	}
	d, err := Manual(InputOf(c, r.cfg.Server.Members(c), r.cfg.Now(), r.cfg.Grace), tier)
	if err != nil {
		return nil, err
	}
	d.Reasons[0] = fmt.Sprintf("tier %s run on request of %s", d.Tier, actor)
	r.log.Info("starting backup run on request", "cluster", cluster, "tier", d.Tier, "type", d.Type, "node", d.Node, "actor", actor)
	return r.start(ctx, c, d, actor)
}

// Answer records what an agent answered to a Backup order: pending (the
// backup runs) as the step "accepted", anything else as the run's result.
// An answer about no run in flight of that cluster and node (any other
// order, or a late answer after a timeout) is ignored: it reports false.
// A leader that did not send the order records the answer too, so a run
// survives a change of leader.
func (r *Runner) Answer(ctx context.Context, res *pgdrv1.CommandResult) (bool, error) {
	c, ok := r.cfg.Server.Cluster(res.GetCluster())
	if !ok {
		return false, nil
	}
	i := slices.IndexFunc(c.GetBackupRuns(), func(br *pgdrv1.BackupRun) bool {
		return br.GetId() == res.GetId() && br.GetNode() == res.GetNode() && br.GetResult() == ""
	})
	if i < 0 {
		return false, nil
	}
	run := c.GetBackupRuns()[i]
	actor := "agent:" + res.GetNode()
	if res.GetPending() {
		return true, r.cfg.Server.Record(ctx, actor, &pgdrv1.RecordBackupRun{Cluster: c.GetName(),
			Phase: &pgdrv1.RecordBackupRun_Step{Step: &pgdrv1.BackupRunStep{Id: run.GetId(), Step: "accepted"}}})
	}
	out := &pgdrv1.BackupRunResult{Id: run.GetId(), Result: ResultOK, Error: res.GetError(),
		SizeBytes: res.GetBackup().GetSizeBytes(), StoredBytes: res.GetBackup().GetStoredBytes(), BackupId: res.GetBackup().GetBackupId()}
	if !res.GetOk() {
		out.Result = ResultFailed
	}
	level := slog.LevelInfo
	if !res.GetOk() {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "backup run ended", "cluster", c.GetName(), "run", run.GetId(), "tier", run.GetTier(),
		"node", run.GetNode(), "result", out.Result, "err", out.Error,
		"took", duration.Format(r.cfg.Now().Sub(run.GetStartedAt().AsTime()).Round(time.Second)))
	return true, r.record(ctx, actor, c.GetName(), out)
}
