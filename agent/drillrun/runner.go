package drillrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/agent/backuprun"
	"github.com/pgdr/pgdr/agent/drill"
	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// RunFunc runs one drill (drill.Run with the agent's Deps). afterBackup,
// when positive, sets the target to the chosen backup's end plus it
// (Driller resolves the backup first).
type RunFunc func(ctx context.Context, o drill.Options, afterBackup time.Duration) (*drill.Result, error)

// Defaults of Deps.
const (
	DefaultRemember   = 32
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// Deps are what a Runner works with; Run and Completer are required.
type Deps struct {
	Cluster, Node string
	Run           RunFunc
	Completer     backuprun.Completer
	Clock         backuprun.Clock
	Log           *slog.Logger
	// Remember is how many ended runs are answered from memory when
	// their order repeats.
	Remember int
	// MinBackoff and MaxBackoff bound the wait between two attempts to
	// deliver a result.
	MinBackoff, MaxBackoff time.Duration
}

// Runner carries out Drill orders, one at a time; safe for concurrent
// use.
type Runner struct {
	d   Deps
	log *slog.Logger
	wg  sync.WaitGroup

	mu      sync.Mutex
	runs    map[string]*run
	ended   []string
	running *run
}

type run struct {
	id, cmdID string
	accepted  time.Time
	result    *pgdrv1.CommandResult
	cancel    context.CancelCauseFunc
}

// Errors of refusals (in the answer's error text).
var (
	ErrBusy     = errors.New("another restore drill is in progress on this node")
	ErrBadOrder = errors.New("bad drill order")
	errTimedOut = errors.New("the drill's timeout passed")
	errCancel   = errors.New("the drill was cancelled by the coordinator")
)

// New returns a Runner.
func New(d Deps) *Runner {
	if d.Clock == nil {
		d.Clock = backuprun.RealClock{}
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Remember <= 0 {
		d.Remember = DefaultRemember
	}
	if d.MinBackoff <= 0 {
		d.MinBackoff = DefaultMinBackoff
	}
	if d.MaxBackoff < d.MinBackoff {
		d.MaxBackoff = max(DefaultMaxBackoff, d.MinBackoff)
	}
	return &Runner{d: d, log: d.Log.With("component", "drill-run"), runs: map[string]*run{}}
}

// StartAt answers the Drill order cmd that arrived at received, at once,
// and runs the drill it accepts in the background (bounded by ctx: pass
// the agent's run context), completing cmd's id when it ends.
func (r *Runner) StartAt(ctx context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult {
	res := &pgdrv1.CommandResult{Id: cmd.GetId(), Cluster: r.d.Cluster, Node: r.d.Node}
	o := cmd.GetDrill()
	if o == nil {
		res.Error = fmt.Sprintf("%v: not a drill order (%T)", ErrBadOrder, cmd.GetKind())
		return res
	}
	res.Drill = &pgdrv1.DrillReport{RunId: o.GetRunId()}
	r.mu.Lock()
	defer r.mu.Unlock()
	ru, known := r.runs[o.GetRunId()]
	if o.GetCancel() {
		switch {
		case !known:
			// Remembered as cancelled: a late order for it never starts.
			res.Error = fmt.Sprintf("drill %s cancelled before it started: %s", o.GetRunId(), o.GetCancelReason())
			res.Drill.NotStarted = true
			r.remember(&run{id: o.GetRunId(), cmdID: cmd.GetId(), result: cloneResult(res)})
			return res
		case ru.result != nil:
			return cloneResult(ru.result)
		}
		ru.cancel(fmt.Errorf("%w: %s", errCancel, o.GetCancelReason()))
		res.Pending = true
		return res
	}
	if known {
		if ru.result != nil {
			return cloneResult(ru.result)
		}
		res.Pending = true
		res.Output = fmt.Sprintf("drill %s runs", ru.id)
		return res
	}
	opts, timeout, err := Options(o)
	after := time.Duration(o.GetTargetAfterBackupMs()) * time.Millisecond
	if err == nil && (after < 0 || after > 0 && opts.TargetTime != nil) {
		err = fmt.Errorf("%w: drill %s: target_after_backup_ms %d: negative, or given with a target time", ErrBadOrder, o.GetRunId(), o.GetTargetAfterBackupMs())
	}
	if err != nil {
		res.Error = err.Error()
		res.Drill.NotStarted = true
		return res
	}
	if cur := r.running; cur != nil {
		res.Error = fmt.Sprintf("%v: drill %s accepted %s ago; one drill at a time", ErrBusy, cur.id,
			r.d.Clock.Now().Sub(cur.accepted).Round(time.Second))
		res.Drill.NotStarted = true
		return res
	}
	if err := ctx.Err(); err != nil {
		res.Error = fmt.Sprintf("drill %s not started: the agent is stopping (%v)", o.GetRunId(), err)
		res.Drill.NotStarted = true
		return res
	}
	now := r.d.Clock.Now()
	ru = &run{id: o.GetRunId(), cmdID: cmd.GetId(), accepted: now}
	left := timeout - now.Sub(received)
	dctx, cancel := context.WithCancelCause(ctx)
	ru.cancel = cancel
	r.runs[ru.id] = ru
	r.running = ru
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.carryOut(ctx, dctx, ru, opts, after, left)
	}()
	r.log.Info("drill accepted", "run", ru.id, "tier", o.GetTier(), "backup", o.GetBackupId(), "timeout", duration.Format(timeout))
	res.Pending = true
	res.Output = fmt.Sprintf("drill %s started", ru.id)
	return res
}

// Options are the drill.Options of order o, and its timeout.
func Options(o *pgdrv1.Drill) (drill.Options, time.Duration, error) {
	id := o.GetRunId()
	if id == "" || len(id) > 128 || strings.IndexFunc(id, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0 {
		return drill.Options{}, 0, fmt.Errorf("%w: run id %q", ErrBadOrder, id)
	}
	timeout := time.Duration(o.GetTimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		return drill.Options{}, 0, fmt.Errorf("%w: drill %s: timeout_ms %d: must be positive", ErrBadOrder, id, o.GetTimeoutMs())
	}
	if o.GetTier() != "" && o.GetBackupId() != "" {
		return drill.Options{}, 0, fmt.Errorf("%w: drill %s names tier %s and backup %s: one, not both", ErrBadOrder, id, o.GetTier(), o.GetBackupId())
	}
	opts := drill.Options{BackupID: o.GetBackupId(), Tier: o.GetTier(), Scratch: o.GetScratch(), ReplayTimeout: timeout}
	if t := o.GetTargetTime(); t != nil {
		tt := t.AsTime()
		opts.TargetTime = &tt
	}
	for _, c := range o.GetChecks() {
		opts.Checks = append(opts.Checks, drill.Check{Name: c.GetName(), Database: c.GetDatabase(), SQL: c.GetSql(), Expect: c.GetExpect()})
	}
	for i := range opts.Checks {
		if opts.Checks[i].Database == "" {
			opts.Checks[i].Database = "postgres"
		}
	}
	return opts, timeout, nil
}

// Report is the bounded summary of a drill's result.
func Report(runID string, res *drill.Result) *pgdrv1.DrillReport {
	rep := &pgdrv1.DrillReport{RunId: runID, RpoSeconds: -1}
	if res == nil {
		return rep
	}
	rep.Ok, rep.Reason, rep.Backup, rep.Target = res.OK, res.Reason, res.Backup, res.Target
	rep.RecoveryLsn, rep.Bytes = res.RecoveryLSN, uint64(max(res.Bytes, 0))
	rep.Timings = &pgdrv1.DrillTimings{FetchWrite: res.Timings.FetchWrite, Replay: res.Timings.Replay,
		Checks: res.Timings.Checks, Total: res.Timings.Total}
	if res.RPO != nil {
		rep.RpoSeconds = res.RPO.Seconds
	}
	if res.Amcheck != nil {
		rep.AmcheckRun, rep.AmcheckOk = true, res.Amcheck.OK
	}
	for _, c := range res.Checks {
		if c.OK {
			rep.ChecksPassed++
		} else {
			rep.ChecksFailed++
		}
	}
	return rep
}

// carryOut runs ru's drill, bounded by left, and delivers its result.
func (r *Runner) carryOut(ctx, dctx context.Context, ru *run, opts drill.Options, after, left time.Duration) {
	log := r.log.With("run", ru.id)
	defer ru.cancel(nil)
	timer := time.AfterFunc(max(left, 0), func() { ru.cancel(errTimedOut) })
	var (
		out *drill.Result
		err error
	)
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("the drill panicked: %v", p)
			}
		}()
		out, err = r.d.Run(dctx, opts, after)
	}()
	timer.Stop()
	res := &pgdrv1.CommandResult{Id: ru.cmdID, Cluster: r.d.Cluster, Node: r.d.Node, Drill: Report(ru.id, out)}
	took := r.d.Clock.Now().Sub(ru.accepted).Round(time.Second)
	cause := context.Cause(dctx)
	switch {
	case err == nil && out != nil && out.OK && cause == nil:
		res.Ok = true
		res.Output = fmt.Sprintf("drill %s passed: backup %s to %s in %s", ru.id, out.Backup, out.Target, duration.Format(took))
	case errors.Is(cause, errTimedOut) || errors.Is(cause, errCancel):
		res.Error = fmt.Sprintf("drill %s stopped after %s: %v; the scratch copy was cleaned up", ru.id, duration.Format(took), cause)
		if out != nil && out.Cleanup != "" {
			res.Error += " (" + out.Cleanup + ")"
		}
	case err != nil:
		res.Error = fmt.Sprintf("drill %s refused or failed to run: %v", ru.id, err)
		res.Drill.NotStarted = errors.Is(err, drill.ErrScratch) || errors.Is(err, drill.ErrOptions)
	case out == nil:
		res.Error = fmt.Sprintf("drill %s returned no result", ru.id)
	default:
		res.Error = fmt.Sprintf("drill %s failed: %s", ru.id, out.Reason)
	}
	if res.Ok {
		log.Info("drill passed", "took", duration.Format(took))
	} else {
		log.Warn("drill did not pass", "err", res.Error)
	}
	r.mu.Lock()
	ru.result = cloneResult(res)
	r.running = nil
	r.remember(ru)
	r.mu.Unlock()
	if ctx.Err() != nil {
		log.Warn("the agent is stopping: the drill's result is not delivered")
		return
	}
	r.deliver(ctx, ru, res, log)
}

// remember notes an ended run, forgetting the oldest beyond Remember.
// r.mu is held.
func (r *Runner) remember(ru *run) {
	r.runs[ru.id] = ru
	r.ended = append(r.ended, ru.id)
	for len(r.ended) > r.d.Remember {
		delete(r.runs, r.ended[0])
		r.ended = r.ended[1:]
	}
}

// deliver completes ru's command with res, retrying with backoff until
// the Completer takes it or ctx ends.
func (r *Runner) deliver(ctx context.Context, ru *run, res *pgdrv1.CommandResult, log *slog.Logger) {
	wait := r.d.MinBackoff
	for attempt := 1; ; attempt++ {
		err := r.d.Completer.Complete(ctx, cloneResult(res))
		if err == nil {
			log.Info("drill result delivered", "command", ru.cmdID, "ok", res.GetOk(), "attempts", attempt)
			return
		}
		log.Warn("delivering the drill's result failed; trying again", "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-r.d.Clock.After(wait):
		}
		wait = min(wait*2, r.d.MaxBackoff)
	}
}

// Wait waits for the background work of every run to end.
func (r *Runner) Wait() { r.wg.Wait() }

func cloneResult(res *pgdrv1.CommandResult) *pgdrv1.CommandResult {
	return proto.Clone(res).(*pgdrv1.CommandResult)
}
