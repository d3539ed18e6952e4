package drillrun

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backuprun"
	"github.com/pgdr/pgdr/agent/drill"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

type completions struct {
	mu  sync.Mutex
	got []*pgdrv1.CommandResult
	ch  chan struct{}
}

func newCompletions() *completions { return &completions{ch: make(chan struct{}, 16)} }

func (c *completions) Complete(_ context.Context, res *pgdrv1.CommandResult) error {
	c.mu.Lock()
	c.got = append(c.got, res)
	c.mu.Unlock()
	c.ch <- struct{}{}
	return nil
}

func (c *completions) wait(t *testing.T) *pgdrv1.CommandResult {
	t.Helper()
	select {
	case <-c.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no result delivered within 30 s")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[len(c.got)-1]
}

func order(id string, timeout time.Duration) *pgdrv1.AgentCommand {
	return &pgdrv1.AgentCommand{Id: id, Cluster: "main", Node: "pg-a2", Kind: &pgdrv1.AgentCommand_Drill{Drill: &pgdrv1.Drill{
		RunId: id, Tier: "daily", TimeoutMs: timeout.Milliseconds(),
		Checks: []*pgdrv1.DrillCheck{{Name: "one", Sql: "select 1", Expect: "1"}}}}}
}

// TestRunnerPassAndRepeat: pending at once, the result completed later
// with the summary; a repeat of the order answers with the run's state
// and starts nothing; a second drill while one runs is refused.
func TestRunnerPassAndRepeat(t *testing.T) {
	release := make(chan struct{})
	var calls int
	var mu sync.Mutex
	comp := newCompletions()
	r := New(Deps{Cluster: "main", Node: "pg-a2", Completer: comp, Run: func(ctx context.Context, o drill.Options, _ time.Duration) (*drill.Result, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		if o.Tier != "daily" || len(o.Checks) != 1 || o.Checks[0].Database != "postgres" {
			t.Errorf("options %+v", o)
		}
		<-release
		return &drill.Result{OK: true, Backup: "B1", Target: "latest", Timings: drill.Timings{FetchWrite: 1, Replay: 2, Checks: 3, Total: 6},
			RPO: &drill.RPO{Seconds: 4}, Amcheck: &drill.Amcheck{OK: true}, Checks: []drill.CheckRun{{OK: true}}}, nil
	}})
	ctx := context.Background()
	res := r.StartAt(ctx, order("d1", time.Minute), time.Now())
	if !res.GetPending() || res.GetDrill().GetRunId() != "d1" {
		t.Fatalf("first answer %v", res)
	}
	if res := r.StartAt(ctx, order("d1", time.Minute), time.Now()); !res.GetPending() {
		t.Fatalf("repeat answer %v", res)
	}
	if res := r.StartAt(ctx, order("d2", time.Minute), time.Now()); res.GetPending() || !res.GetDrill().GetNotStarted() || !strings.Contains(res.GetError(), "one drill at a time") {
		t.Fatalf("second drill answer %v", res)
	}
	close(release)
	got := comp.wait(t)
	rep := got.GetDrill()
	if !got.GetOk() || got.GetId() != "d1" || rep.GetBackup() != "B1" || rep.GetTimings().GetTotal() != 6 || rep.GetRpoSeconds() != 4 ||
		!rep.GetAmcheckOk() || !rep.GetAmcheckRun() || rep.GetChecksPassed() != 1 {
		t.Fatalf("result %v", got)
	}
	if res := r.StartAt(ctx, order("d1", time.Minute), time.Now()); !res.GetOk() || res.GetPending() {
		t.Fatalf("repeat after the end %v", res)
	}
	r.Wait()
	if calls != 1 {
		t.Fatalf("drill ran %d times", calls)
	}
}

// TestRunnerTimeoutAndCancel: at the timeout the drill's context ends and
// the result says so; a cancel order ends a running drill; a cancel of an
// unknown run keeps a late order from starting; a failed drill carries
// its reason; a bad order is refused.
func TestRunnerTimeoutAndCancel(t *testing.T) {
	comp := newCompletions()
	r := New(Deps{Completer: comp, Clock: backuprun.RealClock{}, Run: func(ctx context.Context, o drill.Options, _ time.Duration) (*drill.Result, error) {
		if o.Tier == "bad" {
			return &drill.Result{OK: false, Reason: "check one: got 2, want 1"}, nil
		}
		<-ctx.Done()
		return &drill.Result{OK: false, Reason: "interrupted", Cleanup: "scratch removed"}, nil
	}})
	ctx := context.Background()
	r.StartAt(ctx, order("t1", 50*time.Millisecond), time.Now())
	if got := comp.wait(t); got.GetOk() || !strings.Contains(got.GetError(), "timeout passed") || !strings.Contains(got.GetError(), "scratch removed") {
		t.Fatalf("timed out drill %v", got)
	}
	r.StartAt(ctx, order("c1", time.Hour), time.Now())
	cancel := &pgdrv1.AgentCommand{Id: "c1-cancel", Kind: &pgdrv1.AgentCommand_Drill{Drill: &pgdrv1.Drill{RunId: "c1", Cancel: true, CancelReason: "operator"}}}
	if res := r.StartAt(ctx, cancel, time.Now()); !res.GetPending() {
		t.Fatalf("cancel answer %v", res)
	}
	if got := comp.wait(t); got.GetOk() || !strings.Contains(got.GetError(), "cancelled by the coordinator: operator") {
		t.Fatalf("cancelled drill %v", got)
	}
	early := &pgdrv1.AgentCommand{Id: "x", Kind: &pgdrv1.AgentCommand_Drill{Drill: &pgdrv1.Drill{RunId: "late", Cancel: true}}}
	r.StartAt(ctx, early, time.Now())
	if res := r.StartAt(ctx, order("late", time.Hour), time.Now()); res.GetPending() || !res.GetDrill().GetNotStarted() {
		t.Fatalf("an order cancelled before it came started: %v", res)
	}
	bad := order("f1", time.Hour)
	bad.GetDrill().Tier = "bad"
	r.StartAt(ctx, bad, time.Now())
	if got := comp.wait(t); got.GetOk() || !strings.Contains(got.GetError(), "got 2, want 1") || got.GetDrill().GetReason() == "" {
		t.Fatalf("failed drill %v", got)
	}
	both := order("b1", time.Hour)
	both.GetDrill().BackupId = "B1"
	if res := r.StartAt(ctx, both, time.Now()); res.GetPending() || !strings.Contains(res.GetError(), "one, not both") {
		t.Fatalf("bad order %v", res)
	}
	r.Wait()
}
