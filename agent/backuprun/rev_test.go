package backuprun

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// logSeen is a slog handler noting the messages logged.
type logSeen struct {
	mu   *sync.Mutex
	msgs *[]string
}

func (l logSeen) Enabled(context.Context, slog.Level) bool { return true }
func (l logSeen) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.msgs = append(*l.msgs, r.Message)
	return nil
}
func (l logSeen) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logSeen) WithGroup(string) slog.Handler      { return l }

func (l logSeen) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range *l.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// TestTimedOutRunReportsOnceCleanedUp (adversarial review of the sched
// branch, a): a run whose clean-up outlasts the clean-up grace after its
// timeout does not report its end while the clean-up goes on: the leader
// would record the run ended and start the next backup of the cluster on
// another node while this one still removes what it wrote. The leader's
// own deadlines (grace, cancel, clean-up deadline) bound its wait; the
// answer comes once the clean-up ended.
func TestTimedOutRunReportsOnceCleanedUp(t *testing.T) {
	seen := logSeen{mu: &sync.Mutex{}, msgs: &[]string{}}
	h := newHarness(t, func(d *Deps) { d.CleanupGrace = 20 * time.Second; d.Log = slog.New(seen) })
	h.take.mu.Lock()
	h.take.ignoreCtx = true
	h.take.mu.Unlock()
	released := false
	t.Cleanup(func() { // before the harness's: a failed check must not leave Take hanging
		if !released {
			h.take.finish <- takeOutcome{err: context.Canceled}
		}
	})
	h.r.Start(h.ctx, order("run1", "full", time.Hour))
	h.take.waitStarted(t)
	h.clock.waitWaiter(t, time.Hour)
	h.clock.Advance(time.Hour)
	h.clock.waitWaiter(t, 20*time.Second)
	h.clock.Advance(20 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "the log of the clean-up going on", func() (bool, error) {
		return seen.has("clean-up goes on"), nil
	})
	if res := h.r.Start(h.ctx, order("run1", "full", time.Hour)); !res.GetPending() {
		t.Fatalf("before: the run reported its end while its clean-up goes on: %v", res)
	}
	if res := h.r.Start(h.ctx, order("run2", "full", time.Hour)); !strings.Contains(res.GetError(), ErrBusy.Error()) {
		t.Fatalf("a run while the timed-out one still cleans up = %v, want refused", res)
	}
	h.comp.mu.Lock()
	n := len(h.comp.got)
	h.comp.mu.Unlock()
	if n != 0 {
		t.Fatalf("before: %d results delivered while the clean-up goes on", n)
	}
	h.take.mu.Lock()
	h.take.ignoreCtx = false
	h.take.mu.Unlock()
	h.take.finish <- takeOutcome{err: context.Canceled}
	released = true
	got := h.comp.waitResults(t, 1)[0]
	if got.GetOk() || !strings.Contains(got.GetError(), "timed out") || !strings.Contains(got.GetError(), "longer than") {
		t.Fatalf("completed with %v, want a timeout whose clean-up took long", got)
	}
	if res := h.r.Start(h.ctx, order("run2", "full", time.Hour)); !res.GetPending() {
		t.Fatalf("next run once the clean-up ended = %v, want pending", res)
	}
}

// TestRepeatUpdatesRetention (adversarial review of the sched branch, e):
// the retention the expiry applies after the backup is the newest order's
// of the run: the leader orders a running run again when the cluster's
// policy changed (an operator lengthening a tier's retention during a
// full that runs for hours), and the expiry must not delete what the new
// policy keeps.
func TestRepeatUpdatesRetention(t *testing.T) {
	var mu sync.Mutex
	var calls []expire.Spec
	h := newHarness(t, func(d *Deps) {
		d.Expire = func(_ context.Context, _, _ []repo.Repo, spec expire.Spec) ([]expire.Result, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, spec)
			return nil, nil
		}
	})
	withRet := func(c *pgdrv1.AgentCommand, count int64) *pgdrv1.AgentCommand {
		c.GetBackup().Retention = &pgdrv1.BackupRetention{PitrWindowMs: (24 * time.Hour).Milliseconds(),
			Tiers: []*pgdrv1.TierRetention{{Tier: "daily", KeepCount: count}}}
		return c
	}
	h.r.Start(h.ctx, withRet(order("run1", "full", time.Hour), 2))
	h.take.waitStarted(t)
	if res := h.r.Start(h.ctx, withRet(order("run1", "full", time.Hour), 30)); !res.GetPending() {
		t.Fatalf("repeat %v", res)
	}
	// A repeat without retention (an older leader's) keeps the newest.
	h.r.Start(h.ctx, order("run1", "full", time.Hour))
	h.take.finish <- takeOutcome{m: manifest("B1")}
	h.comp.waitResults(t, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 || calls[0].Tiers["daily"].Count != 30 {
		t.Fatalf("before: expiry with %+v, want the repeat's keep_count 30", calls)
	}
}
