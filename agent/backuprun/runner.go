package backuprun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/duration"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/tiername"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TakeFunc takes one backup of the local server into repos (the agent's
// repositories the order names) with o, and returns its manifest; nil
// with an error when no backup was recorded. It must return soon after
// ctx ends, having removed what it wrote (backup.Take does). Taker
// returns the agent's.
type TakeFunc func(ctx context.Context, repos []repo.Repo, o backup.Options) (*backup.Manifest, error)

// ExpireFunc expires repos (the order's repositories) by spec after a
// successful backup, honouring the pins of all (every repository of the
// agent): expire.Run as `pgdr-agent expire` calls it. Expirer returns the
// agent's.
type ExpireFunc func(ctx context.Context, repos, all []repo.Repo, spec expire.Spec) ([]expire.Result, error)

// Completer delivers the final result of a command (res.Id) to the
// coordinator leader: agent/session's Session.Complete. An error means it
// was not delivered: the Runner tries again later. It may fill res's
// cluster and node.
type Completer interface {
	Complete(ctx context.Context, res *pgdrv1.CommandResult) error
}

// CompleterFunc is a func as a Completer (a session built after the
// Runner: func(ctx, res) error { return sess.Complete(ctx, res) }).
type CompleterFunc func(ctx context.Context, res *pgdrv1.CommandResult) error

// Complete calls f.
func (f CompleterFunc) Complete(ctx context.Context, res *pgdrv1.CommandResult) error {
	return f(ctx, res)
}

// Clock is the time a Runner goes by: timeouts, clean-up grace and the
// completion's backoff. RealClock in production; tests use a fake.
type Clock interface {
	Now() time.Time
	// After sends once on the channel when d has passed.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the system clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// After is time.After.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Defaults of Deps.
const (
	DefaultRemember     = 64
	DefaultCleanupGrace = 30 * time.Second
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 30 * time.Second
)

// Deps are what a Runner works with. Take, Completer and Repos are
// required.
type Deps struct {
	// Cluster and Node name this agent in its results (its
	// configuration's cluster and node.name; the order's when empty).
	Cluster, Node string
	// Repos are the agent's repositories, opened, by their configured
	// names; an order names a subset of them.
	Repos     []repo.Repo
	Take      TakeFunc
	Completer Completer
	// Expire runs the retention an order carries after its backup
	// succeeded (nil: an order's retention is reported as not applied).
	Expire ExpireFunc
	Clock  Clock // RealClock when nil
	Log    *slog.Logger
	// Remember is how many ended runs are remembered with their results
	// to answer repeats (DefaultRemember when 0).
	Remember int
	// CleanupGrace is how long after the timeout a clean-up may take
	// before it is logged as slow (DefaultCleanupGrace when 0); the end
	// is reported only once the clean-up ended.
	CleanupGrace time.Duration
	// MinBackoff and MaxBackoff bound the wait between two attempts to
	// deliver a result (doubling from MinBackoff).
	MinBackoff, MaxBackoff time.Duration
}

// Runner carries out Backup orders, one at a time. It is safe for
// concurrent use.
type Runner struct {
	d   Deps
	log *slog.Logger
	wg  sync.WaitGroup

	mu      sync.Mutex
	runs    map[string]*run // by run id: the running one and the remembered
	ended   []string        // run ids of ended runs, oldest first
	running *run            // holds the node until Take returned
}

// run is one backup run, from its acceptance.
type run struct {
	id, cmdID, tier, typ string
	repos                []string
	timeout              time.Duration
	// received: the order's arrival, which the timeout counts from;
	// accepted: its acceptance (both on Deps.Clock).
	received, accepted time.Time
	// result: nil while it runs; the final answer once it ended.
	result *pgdrv1.CommandResult
	// cancel stops the backup (a cancel order: errCancelled); cancelled
	// says why.
	cancel    context.CancelCauseFunc
	cancelled string
	retention *pgdrv1.BackupRetention
}

// New returns a Runner.
func New(d Deps) *Runner {
	if d.Clock == nil {
		d.Clock = RealClock{}
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Remember <= 0 {
		d.Remember = DefaultRemember
	}
	if d.CleanupGrace <= 0 {
		d.CleanupGrace = DefaultCleanupGrace
	}
	if d.MinBackoff <= 0 {
		d.MinBackoff = DefaultMinBackoff
	}
	if d.MaxBackoff < d.MinBackoff {
		d.MaxBackoff = max(DefaultMaxBackoff, d.MinBackoff)
	}
	return &Runner{d: d, log: d.Log.With("component", "backup-run"), runs: map[string]*run{}}
}

// Errors of Start's refusals (wrapped, with the details, in the answer's
// error text).
var (
	// ErrBusy: another run holds this node.
	ErrBusy = errors.New("another backup run is in progress on this node")
	// ErrBadOrder: the order cannot be carried out as given.
	ErrBadOrder = errors.New("bad backup order")
	// ErrExpired: the order's budget to start passed before its turn.
	ErrExpired = errors.New("backup order expired")
)

// errTimedOut is the cause a run's context is cancelled with at its
// timeout; errCancelled with a cancel order.
var (
	errTimedOut  = errors.New("the backup run's timeout passed")
	errCancelled = errors.New("the backup run was cancelled by the coordinator")
)

// Start answers the Backup order cmd at once, and runs the backup it
// accepts in the background, completing cmd's id through the Completer
// when it ends. The answer is pending (accepted), the state of the run
// when cmd repeats a run id this Runner remembers (pending while it runs,
// its result once it ended), or a refusal (ok and pending false, error
// set). ctx bounds the background work (the backup and the delivery of
// its result): pass the agent's run context, not the session's, which
// ends when the connection to the leader drops.
func (r *Runner) Start(ctx context.Context, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
	return r.StartAt(ctx, cmd, r.d.Clock.Now())
}

// StartAt is Start for an order that arrived at received, on Deps.Clock
// (the session stamps orders as they arrive, before their turn comes
// behind other orders). The run's timeout counts from received, so that
// time spent waiting for its turn is not added to it, and an order whose
// budget (budget_ms, counted from received when the order carries
// sent_at) passed before its turn is refused: the leader no longer waits
// for it to start.
func (r *Runner) StartAt(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult {
	res := r.result(cmd)
	b := cmd.GetBackup()
	if b == nil {
		res.Error = fmt.Sprintf("%v: not a backup order (%T)", ErrBadOrder, cmd.GetKind())
		return res
	}
	// Every answer names its run: the coordinator tells a backup answer
	// it must record (and have sent again) from any other.
	res.Backup = &pgdrv1.BackupReport{RunId: b.GetRunId()}
	r.mu.Lock()
	defer r.mu.Unlock()
	if b.GetCancel() {
		return r.cancelRun(cmd, b, res)
	}
	if ru, ok := r.runs[b.GetRunId()]; ok && b.GetRunId() != "" {
		if rt := b.GetRetention(); rt != nil && ru.result == nil {
			// The newest order's retention: the leader orders a run again
			// when the cluster's policy changed while it ran, and the
			// expiry after it must not delete what the new policy keeps.
			ru.retention = proto.Clone(rt).(*pgdrv1.BackupRetention)
		}
		return r.answerRepeat(cmd, ru)
	}
	repos, err := r.check(b)
	if err != nil {
		res.Error = err.Error()
		r.log.Warn("backup order refused", "command", cmd.GetId(), "run", b.GetRunId(), "err", err)
		return res
	}
	if ru := r.running; ru != nil {
		what := "running"
		if ru.result != nil {
			what = "cleaning up after its end"
		}
		res.Error = fmt.Sprintf("%v: run %s (tier %s, %s) is %s, accepted %s ago; one backup at a time",
			ErrBusy, ru.id, ru.tier, ru.typ, what, r.d.Clock.Now().Sub(ru.accepted).Round(time.Second))
		res.Backup.NotStarted = true
		r.log.Warn("backup order refused", "command", cmd.GetId(), "run", b.GetRunId(), "err", res.Error)
		return res
	}
	if err := ctx.Err(); err != nil {
		res.Error = fmt.Sprintf("backup run %s not started: the agent is stopping (%v)", b.GetRunId(), err)
		res.Backup.NotStarted = true
		return res
	}
	now := r.d.Clock.Now()
	if cmd.GetSentAt() != nil && cmd.GetDeadline() != nil {
		if budget := time.Duration(cmd.GetBudgetMs()) * time.Millisecond; !now.Before(received.Add(budget)) {
			res.Error = fmt.Sprintf("%v: backup run %s received %s ago with a budget of %s to start: the leader no longer waits for it",
				ErrExpired, b.GetRunId(), now.Sub(received).Round(time.Millisecond), budget)
			r.log.Warn("backup order refused", "command", cmd.GetId(), "run", b.GetRunId(), "err", res.Error)
			res.Backup.NotStarted = true
			return res
		}
	}
	ru := &run{id: b.GetRunId(), cmdID: cmd.GetId(), tier: b.GetTier(), typ: b.GetType(), repos: names(repos),
		timeout: time.Duration(b.GetTimeoutMs()) * time.Millisecond, received: received, accepted: now, retention: b.GetRetention()}
	bctx, cancel := context.WithCancelCause(ctx)
	ru.cancel = cancel
	r.runs[ru.id] = ru
	r.running = ru
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.carryOut(ctx, bctx, ru, repos, cmd)
	}()
	r.log.Info("backup run accepted", "run", ru.id, "command", ru.cmdID, "tier", ru.tier, "type", ru.typ,
		"repos", strings.Join(ru.repos, ","), "timeout", duration.Format(ru.timeout))
	res.Pending = true
	res.Output = fmt.Sprintf("backup run %s (tier %s, %s) started", ru.id, ru.tier, ru.typ)
	return res
}

// cancelRun answers the cancel order cmd of run b.RunId: a running run
// is cancelled (its backup's context ends: Take removes what it wrote)
// and the answer is pending, the run's final result following once its
// clean-up ended; an ended run is answered with its result; a run this
// agent does not have is remembered as cancelled, so a late order for it
// never starts. r.mu is held.
func (r *Runner) cancelRun(cmd *pgdrv1.AgentCommand, b *pgdrv1.Backup, res *pgdrv1.CommandResult) *pgdrv1.CommandResult {
	id := b.GetRunId()
	why := b.GetCancelReason()
	if why == "" {
		why = "no reason given"
	}
	ru, ok := r.runs[id]
	switch {
	case id == "":
		res.Error = fmt.Sprintf("%v: a cancel order without a run id", ErrBadOrder)
		return res
	case !ok:
		res.Error = fmt.Sprintf("backup run %s is not known to this agent: nothing runs; it will not start (%s)", id, why)
		res.Backup.NotStarted = true
		r.runs[id] = &run{id: id, cmdID: cmd.GetId(), result: cloneResult(res)}
		r.ended = append(r.ended, id)
		r.forget()
		r.log.Warn("cancel order for a backup run this agent does not have: it will not start", "run", id, "reason", why)
		return res
	case ru.result != nil:
		return r.answerRepeat(cmd, ru)
	}
	if ru.cancelled == "" {
		ru.cancelled = why
		ru.cancel(errCancelled)
		r.log.Warn("backup run cancelled by the coordinator: stopping it and cleaning up", "run", id, "reason", why)
	}
	res.Pending = true
	res.Output = fmt.Sprintf("backup run %s is being cancelled (%s): its result follows once it is cleaned up", id, why)
	return res
}

// Wait waits until every run's background work has ended (after the
// context given to Start ended, or every result was delivered).
func (r *Runner) Wait() { r.wg.Wait() }

// result is an empty answer to cmd.
func (r *Runner) result(cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
	res := &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: r.d.Cluster, Node: r.d.Node}
	if res.Cluster == "" {
		res.Cluster = cmd.GetCluster()
	}
	if res.Node == "" {
		res.Node = cmd.GetNode()
	}
	return res
}

// answerRepeat answers cmd, a repeat of run ru, with its state. r.mu is
// held.
func (r *Runner) answerRepeat(cmd *pgdrv1.AgentCommand, ru *run) *pgdrv1.CommandResult {
	if ru.result != nil {
		out := cloneResult(ru.result)
		out.Id = cmd.GetId()
		r.log.Info("backup order repeated: answered with the run's result", "run", ru.id, "command", cmd.GetId(), "ok", out.GetOk())
		return out
	}
	res := r.result(cmd)
	res.Pending = true
	res.Output = fmt.Sprintf("backup run %s (tier %s, %s) is running, accepted %s ago", ru.id, ru.tier, ru.typ,
		r.d.Clock.Now().Sub(ru.accepted).Round(time.Second))
	r.log.Info("backup order repeated: the run is still going", "run", ru.id, "command", cmd.GetId())
	return res
}

// check validates b and returns the repositories it names (all of the
// agent's when it names none).
func (r *Runner) check(b *pgdrv1.Backup) ([]repo.Repo, error) {
	id := b.GetRunId()
	if id == "" || len(id) > 128 || strings.IndexFunc(id, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0 {
		return nil, fmt.Errorf("%w: run id %q: want 1 to 128 printable characters without spaces", ErrBadOrder, clip(id))
	}
	switch b.GetType() {
	case backup.TypeFull, backup.TypeDiff, backup.TypeIncr:
	default:
		return nil, fmt.Errorf("%w: run %s: type %q: want full, diff or incr", ErrBadOrder, id, clip(b.GetType()))
	}
	if !tiername.Valid(b.GetTier()) {
		// The manifest records the tier, and expire --keep-tier must be
		// able to name it.
		return nil, fmt.Errorf("%w: run %s: tier %q: want %s (rename the tier in the cluster's backup policy)", ErrBadOrder, id, clip(b.GetTier()), tiername.Rule)
	}
	if b.GetTimeoutMs() <= 0 {
		return nil, fmt.Errorf("%w: run %s: timeout_ms %d: a backup run must have a timeout", ErrBadOrder, id, b.GetTimeoutMs())
	}
	if len(b.GetRepositories()) == 0 {
		if len(r.d.Repos) == 0 {
			return nil, fmt.Errorf("%w: run %s: this agent has no repository", ErrBadOrder, id)
		}
		return slices.Clone(r.d.Repos), nil
	}
	var out []repo.Repo
	for _, name := range b.GetRepositories() {
		i := slices.IndexFunc(r.d.Repos, func(rp repo.Repo) bool { return rp.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("%w: run %s: unknown repository %q: this agent's repositories are %s", ErrBadOrder, id, clip(name), strings.Join(names(r.d.Repos), ", "))
		}
		if !slices.ContainsFunc(out, func(rp repo.Repo) bool { return rp.Name == name }) {
			out = append(out, r.d.Repos[i])
		}
	}
	return out, nil
}

// carryOut takes the backup of ru, bounded by its timeout, records its
// result and delivers it.
func (r *Runner) carryOut(ctx, bctx context.Context, ru *run, repos []repo.Repo, cmd *pgdrv1.AgentCommand) {
	log := r.log.With("run", ru.id, "tier", ru.tier, "type", ru.typ)
	cancel := ru.cancel
	defer cancel(nil)
	type outcome struct {
		m   *backup.Manifest
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		defer func() {
			if p := recover(); p != nil {
				o = outcome{err: fmt.Errorf("the backup panicked: %v", p)}
			}
			r.release(ru)
			done <- o
		}()
		o.m, o.err = r.d.Take(bctx, repos, backup.Options{Type: ru.typ, Tier: ru.tier,
			Label: fmt.Sprintf("pgdr tier %s run %s", ru.tier, ru.id)})
	}()

	var out outcome
	timedOut, cleaning := false, false
	select {
	case out = <-done:
	case <-r.d.Clock.After(ru.timeout - ru.accepted.Sub(ru.received)):
		timedOut = true
		cancel(errTimedOut)
		log.Warn("backup run timed out: cancelling the backup", "timeout", duration.Format(ru.timeout))
		select {
		case out = <-done:
		case <-r.d.Clock.After(r.d.CleanupGrace):
			// The end is reported once the clean-up ended, not before:
			// the leader would record the run ended and start the
			// cluster's next backup elsewhere while this one still
			// removes what it wrote. Its own deadlines (its grace, its
			// cancel order, its clean-up deadline) bound its wait.
			cleaning = true
			log.Error("backup run timed out; its clean-up goes on: its end is reported once the clean-up ended",
				"timeout", duration.Format(ru.timeout), "grace", duration.Format(r.d.CleanupGrace))
			out = <-done
		case <-ctx.Done():
			out = <-done
		}
	case <-ctx.Done():
		cancel(ctx.Err())
		out = <-done
	}

	res := r.result(cmd)
	res.Id = ru.cmdID
	res.Backup = &pgdrv1.BackupReport{RunId: ru.id}
	took := r.d.Clock.Now().Sub(ru.accepted).Round(time.Second)
	cancelled := !timedOut && errors.Is(context.Cause(bctx), errCancelled)
	switch {
	case out.err == nil && out.m != nil:
		m := out.m
		res.Ok = true
		res.Backup = &pgdrv1.BackupReport{RunId: ru.id, Type: m.Type, BackupId: m.ID, SizeBytes: uint64(max(m.DatabaseBytes, 0)), StoredBytes: uint64(max(m.StoredBytes, 0))}
		res.Output = fmt.Sprintf("backup %s (%s) of tier %s complete: %d bytes read, %d stored, in %s", m.ID, m.Type, ru.tier,
			m.DatabaseBytes, m.StoredBytes, duration.Format(took))
		if m.Type != ru.typ {
			res.Output += fmt.Sprintf("; full instead of %s: %s", ru.typ, m.TypeReason)
		}
		if timedOut {
			res.Output += " (it ended as its timeout passed; the backup exists)"
		}
		log.Info("backup run complete", "backup", m.ID, "took", duration.Format(took))
		r.mu.Lock()
		rt := ru.retention // a repeat of the order may have changed it
		r.mu.Unlock()
		if rt != nil && ctx.Err() == nil {
			res.Backup.Expiry = r.expire(ctx, rt, repos, log)
			if e := res.Backup.Expiry; e.GetError() != "" {
				res.Output += "; expiry failed (the backup stands): " + e.GetError()
			} else {
				res.Output += fmt.Sprintf("; expiry removed %d backups and %d WAL files (%d objects)", e.GetBackupsDeleted(), e.GetWalDeleted(), e.GetObjectsDeleted())
			}
		}
	case cancelled:
		res.Error = fmt.Sprintf("backup run %s (tier %s, %s): cancelled by the coordinator (%s) after %s: the backup was cancelled, not recorded, and its objects removed",
			ru.id, ru.tier, ru.typ, ru.cancelled, duration.Format(took))
		log.Warn("backup run cancelled", "err", res.Error)
	case cleaning:
		res.Error = fmt.Sprintf("backup run %s (tier %s, %s): timed out after %s (the order's timeout): the backup was cancelled and is not recorded; its clean-up took longer than %s",
			ru.id, ru.tier, ru.typ, duration.Format(ru.timeout), duration.Format(r.d.CleanupGrace))
		if out.err != nil && !errors.Is(out.err, context.Canceled) {
			res.Error += " (" + out.err.Error() + ")"
		}
		log.Error("backup run timed out; its clean-up ended", "err", res.Error)
	case timedOut:
		res.Error = fmt.Sprintf("backup run %s (tier %s, %s): timed out after %s (the order's timeout): the backup was cancelled, not recorded, and its objects removed",
			ru.id, ru.tier, ru.typ, duration.Format(ru.timeout))
		if out.err != nil && !errors.Is(out.err, context.Canceled) {
			res.Error += " (" + out.err.Error() + ")"
		}
		log.Error("backup run timed out", "err", res.Error)
	default:
		err := out.err
		if err == nil {
			err = errors.New("the backup returned no manifest")
		}
		res.Error = fmt.Sprintf("backup run %s (tier %s, %s) failed after %s: %v", ru.id, ru.tier, ru.typ, duration.Format(took), err)
		log.Error("backup run failed", "err", err)
	}
	r.finish(ru, res)
	if ctx.Err() != nil {
		log.Warn("the agent is stopping: the backup run's result is not delivered", "ok", res.GetOk(), "err", res.GetError())
		return
	}
	r.deliver(ctx, ru, res, log)
}

// finish records ru's result and remembers it among the last
// Deps.Remember ended runs.
func (r *Runner) finish(ru *run, res *pgdrv1.CommandResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ru.result = cloneResult(res)
	r.ended = append(r.ended, ru.id)
	r.forget()
}

// forget drops the oldest ended runs beyond Deps.Remember. The run still
// cleaning up (at most one) stays: its run id must not start another
// backup while it holds the node. r.mu is held.
func (r *Runner) forget() {
	for len(r.ended) > r.d.Remember && r.runs[r.ended[0]] != r.running {
		delete(r.runs, r.ended[0])
		r.ended = r.ended[1:]
	}
}

// expire runs the retention rt over repos after a backup succeeded; a
// failure is reported, and does not fail the backup.
func (r *Runner) expire(ctx context.Context, rt *pgdrv1.BackupRetention, repos []repo.Repo, log *slog.Logger) *pgdrv1.BackupExpiry {
	out := &pgdrv1.BackupExpiry{}
	if r.d.Expire == nil {
		out.Error = "this agent does not run expiry"
		return out
	}
	spec, err := SpecOf(rt)
	if err != nil {
		out.Error = err.Error()
		log.Error("expiry after the backup not run", "err", err)
		return out
	}
	results, err := r.d.Expire(ctx, repos, r.d.Repos, spec)
	for _, res := range results {
		out.BackupsDeleted += uint32(len(res.Deleted))
		out.WalDeleted += uint64(max(res.WALDeleted, 0))
		out.ObjectsDeleted += uint64(max(res.Objects, 0))
	}
	if err != nil {
		out.Error = err.Error()
		log.Error("expiry after the backup failed (the backup stands)", "err", err)
		return out
	}
	log.Info("expiry after the backup", "backups_deleted", out.BackupsDeleted, "wal_deleted", out.WalDeleted, "objects_deleted", out.ObjectsDeleted)
	return out
}

// SpecOf is the expire.Spec of an order's retention: each tier's rule
// (keep_count, keep_age) as `expire --keep-tier NAME=...`, and the PITR
// window; an error names what is wrong.
func SpecOf(rt *pgdrv1.BackupRetention) (expire.Spec, error) {
	spec := expire.Spec{Tiers: map[string]expire.Rule{}, PITRWindow: time.Duration(rt.GetPitrWindowMs()) * time.Millisecond}
	for _, t := range rt.GetTiers() {
		if !tiername.Valid(t.GetTier()) {
			return expire.Spec{}, fmt.Errorf("%w: retention of tier %q: want %s", ErrBadOrder, clip(t.GetTier()), tiername.Rule)
		}
		rule := expire.Rule{Count: int(min(max(t.GetKeepCount(), 0), 1<<30)), Age: time.Duration(max(t.GetKeepAgeMs(), 0)) * time.Millisecond}
		if rule.Count == 0 && rule.Age == 0 {
			continue // no rule: the tier's backups follow expire's defaults (a full is kept)
		}
		spec.Tiers[t.GetTier()] = rule
	}
	if err := spec.Validate(); err != nil {
		return expire.Spec{}, fmt.Errorf("%w: retention: %w", ErrBadOrder, err)
	}
	return spec, nil
}

// release frees the node once ru's Take has returned.
func (r *Runner) release(ru *run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == ru {
		r.running = nil
	}
}

// deliver completes ru's command with res, retrying with backoff until
// the Completer takes it or ctx ends.
func (r *Runner) deliver(ctx context.Context, ru *run, res *pgdrv1.CommandResult, log *slog.Logger) {
	wait := r.d.MinBackoff
	for attempt := 1; ; attempt++ {
		err := r.d.Completer.Complete(ctx, cloneResult(res))
		if err == nil {
			log.Info("backup run's result delivered", "command", ru.cmdID, "ok", res.GetOk(), "attempts", attempt)
			return
		}
		log.Warn("delivering the backup run's result failed; trying again", "command", ru.cmdID, "attempt", attempt,
			"retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			log.Warn("the agent is stopping: the backup run's result is not delivered", "command", ru.cmdID)
			return
		case <-r.d.Clock.After(wait):
		}
		wait = min(wait*2, r.d.MaxBackoff)
	}
}

func cloneResult(res *pgdrv1.CommandResult) *pgdrv1.CommandResult {
	out := &pgdrv1.CommandResult{Id: res.GetId(), Cluster: res.GetCluster(), Node: res.GetNode(), Ok: res.GetOk(),
		Error: res.GetError(), Output: res.GetOutput(), Pending: res.GetPending()}
	if b := res.GetBackup(); b != nil {
		out.Backup = proto.Clone(b).(*pgdrv1.BackupReport)
	}
	return out
}

func names(rs []repo.Repo) []string {
	out := make([]string, len(rs))
	for i, rp := range rs {
		out[i] = rp.Name
	}
	return out
}

// clip shortens a value quoted in an error.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
