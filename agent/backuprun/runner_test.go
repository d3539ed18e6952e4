package backuprun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakeClock is a Clock moved by Advance; After's waiters fire when it
// reaches them.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	d  time.Duration
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), d: d, ch: ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// waitWaiter waits until something waits for d on the clock.
func (c *fakeClock) waitWaiter(t *testing.T, d time.Duration) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("a wait of %s on the clock", d), func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		var ds []time.Duration
		for _, w := range c.waiters {
			if w.d == d {
				return true, nil
			}
			ds = append(ds, w.d)
		}
		return false, fmt.Errorf("waiting for %v", ds)
	})
}

// fakeTake is a TakeFunc the test ends: each call waits for an outcome
// on finish, or for its context (unless ignoreCtx).
type fakeTake struct {
	mu        sync.Mutex
	calls     []takeCall
	started   chan takeCall
	finish    chan takeOutcome
	ignoreCtx bool
}

type takeCall struct {
	repos []string
	o     backup.Options
	ctx   context.Context
}

type takeOutcome struct {
	m   *backup.Manifest
	err error
}

func newFakeTake() *fakeTake {
	return &fakeTake{started: make(chan takeCall, 16), finish: make(chan takeOutcome)}
}

func (f *fakeTake) take(ctx context.Context, repos []repo.Repo, o backup.Options) (*backup.Manifest, error) {
	c := takeCall{repos: names(repos), o: o, ctx: ctx}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	ignore := f.ignoreCtx
	f.mu.Unlock()
	f.started <- c
	if ignore {
		out := <-f.finish
		return out.m, out.err
	}
	select {
	case out := <-f.finish:
		return out.m, out.err
	case <-ctx.Done():
		return nil, fmt.Errorf("copying base/5/1259: %w", ctx.Err())
	}
}

func (f *fakeTake) nCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeTake) waitStarted(t *testing.T) takeCall {
	t.Helper()
	select {
	case c := <-f.started:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the backup did not start")
		return takeCall{}
	}
}

// fakeCompleter takes results after failing the first `fail` attempts.
type fakeCompleter struct {
	mu       sync.Mutex
	fail     int
	attempts int
	got      []*pgdrv1.CommandResult
	ids      []string
}

func (c *fakeCompleter) Complete(_ context.Context, res *pgdrv1.CommandResult) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempts++
	if c.attempts <= c.fail {
		return errors.New("no session with the coordinator leader")
	}
	c.got = append(c.got, res)
	c.ids = append(c.ids, res.GetId())
	return nil
}

func (c *fakeCompleter) waitResults(t *testing.T, n int) []*pgdrv1.CommandResult {
	t.Helper()
	return c.waitResultsWithin(t, n, 10*time.Second)
}

func (c *fakeCompleter) waitResultsWithin(t *testing.T, n int, d time.Duration) []*pgdrv1.CommandResult {
	t.Helper()
	testutil.WaitFor(t, d, fmt.Sprintf("%d delivered result(s)", n), func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.got) >= n, fmt.Errorf("%d delivered, %d attempts", len(c.got), c.attempts)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

type harness struct {
	r     *Runner
	clock *fakeClock
	take  *fakeTake
	comp  *fakeCompleter
	ctx   context.Context
}

func newHarness(t *testing.T, edit func(*Deps)) *harness {
	t.Helper()
	h := &harness{clock: newFakeClock(), take: newFakeTake(), comp: &fakeCompleter{}}
	d := Deps{Cluster: "main", Node: "pg-a2", Repos: []repo.Repo{{Name: "local"}, {Name: "dr"}}, Take: h.take.take,
		Completer: h.comp, Clock: h.clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&d)
	}
	h.r = New(d)
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	t.Cleanup(func() {
		cancel()
		h.r.Wait()
	})
	return h
}

func order(id, typ string, timeout time.Duration, repos ...string) *pgdrv1.AgentCommand {
	return &pgdrv1.AgentCommand{Id: id, Cluster: "main", Node: "pg-a2", Epoch: 3,
		Kind: &pgdrv1.AgentCommand_Backup{Backup: &pgdrv1.Backup{RunId: id, Tier: "daily", Type: typ,
			Repositories: repos, TimeoutMs: timeout.Milliseconds()}}}
}

func manifest(id string) *backup.Manifest {
	return &backup.Manifest{ID: id, Type: backup.TypeFull, DatabaseBytes: 30 << 20, StoredBytes: 4 << 20}
}

func TestStartAnswersPendingAndCompletesWithTheBackup(t *testing.T) {
	h := newHarness(t, nil)
	res := h.r.Start(h.ctx, order("run1", "full", time.Hour, "dr"))
	if !res.GetPending() || res.GetOk() || res.GetError() != "" || res.GetId() != "run1" || res.GetNode() != "pg-a2" || res.GetCluster() != "main" {
		t.Fatalf("first answer = %v, want pending for run1 of main/pg-a2", res)
	}
	c := h.take.waitStarted(t)
	if !slices.Equal(c.repos, []string{"dr"}) || c.o.Type != "full" || c.o.Tier != "daily" {
		t.Fatalf("backup taken into %v with %+v, want repository dr, type full, tier daily", c.repos, c.o)
	}
	h.take.finish <- takeOutcome{m: manifest("20261207T120000F")}
	got := h.comp.waitResults(t, 1)[0]
	if !got.GetOk() || got.GetId() != "run1" || got.GetBackup().GetBackupId() != "20261207T120000F" ||
		got.GetBackup().GetSizeBytes() != 30<<20 || got.GetBackup().GetStoredBytes() != 4<<20 || got.GetPending() {
		t.Fatalf("completed with %v, want ok with backup 20261207T120000F and its sizes", got)
	}
}

func TestAllRepositoriesWhenTheOrderNamesNone(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Start(h.ctx, order("run1", "incr", time.Hour))
	if c := h.take.waitStarted(t); !slices.Equal(c.repos, []string{"local", "dr"}) || c.o.Type != "incr" {
		t.Fatalf("backup taken into %v as %s, want every repository (local, dr), incr", c.repos, c.o.Type)
	}
}

func TestRepeatedRunIDIsAnsweredNotRunAgain(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Start(h.ctx, order("run1", "full", time.Hour))
	h.take.waitStarted(t)
	again := h.r.Start(h.ctx, order("run1", "full", time.Hour))
	if !again.GetPending() || again.GetError() != "" {
		t.Fatalf("repeat while running = %v, want pending", again)
	}
	h.take.finish <- takeOutcome{m: manifest("20261207T120000F")}
	h.comp.waitResults(t, 1)
	again = h.r.Start(h.ctx, order("run1", "full", time.Hour))
	if !again.GetOk() || again.GetPending() || again.GetBackup().GetBackupId() != "20261207T120000F" {
		t.Fatalf("repeat after the end = %v, want the run's result (ok, backup 20261207T120000F)", again)
	}
	if n := h.take.nCalls(); n != 1 {
		t.Fatalf("the backup was taken %d times for one run id, want once", n)
	}
}

func TestSecondRunRefusedWhileOneRuns(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Start(h.ctx, order("run1", "full", time.Hour))
	h.take.waitStarted(t)
	res := h.r.Start(h.ctx, order("run2", "incr", time.Hour))
	if res.GetOk() || res.GetPending() || !strings.Contains(res.GetError(), ErrBusy.Error()) || !strings.Contains(res.GetError(), "run1") {
		t.Fatalf("second run while one runs = %v, want refused naming run1", res)
	}
	h.take.finish <- takeOutcome{m: manifest("20261207T120000F")}
	h.comp.waitResults(t, 1)
	// Refused, not remembered: the same run id may be ordered again.
	if res := h.r.Start(h.ctx, order("run2", "incr", time.Hour)); !res.GetPending() {
		t.Fatalf("run2 once run1 ended = %v, want pending", res)
	}
	h.take.waitStarted(t)
}

func TestBadOrdersRefused(t *testing.T) {
	cases := []struct {
		name string
		cmd  *pgdrv1.AgentCommand
		want string
	}{
		{"bad type", order("run1", "snapshot", time.Hour), `type "snapshot": want full, diff or incr`},
		{"no type", order("run1", "", time.Hour), `type "": want full, diff or incr`},
		{"unknown repository", order("run1", "full", time.Hour, "local", "s3-eu"), `unknown repository "s3-eu": this agent's repositories are local, dr`},
		{"no timeout", order("run1", "full", 0), "must have a timeout"},
		{"no run id", order("", "full", time.Hour), "run id"},
		{"not a backup", &pgdrv1.AgentCommand{Id: "x", Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}, "not a backup order"},
		// Tier names are what expire --keep-tier can name (pkg/tiername).
		{"upper-case tier", withTier(order("run1", "full", time.Hour), "Weekly"), `tier "Weekly": want lower-case letters`},
		{"dot in tier", withTier(order("run1", "full", time.Hour), "db.daily"), `tier "db.daily": want lower-case letters`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			res := h.r.Start(h.ctx, tc.cmd)
			if res.GetOk() || res.GetPending() || !strings.Contains(res.GetError(), tc.want) {
				t.Fatalf("answer = %v, want refused with %q", res, tc.want)
			}
			if n := h.take.nCalls(); n != 0 {
				t.Fatalf("a refused order took %d backup(s)", n)
			}
		})
	}
}

func TestTimeoutCancelsTheBackupAndReportsIt(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Start(h.ctx, order("run1", "full", 2*time.Hour))
	c := h.take.waitStarted(t)
	h.clock.waitWaiter(t, 2*time.Hour)
	h.clock.Advance(2*time.Hour - time.Second)
	if c.ctx.Err() != nil {
		t.Fatal("the backup was cancelled before its timeout")
	}
	h.clock.Advance(time.Second)
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the backup's context was not cancelled at the timeout")
	}
	if !errors.Is(context.Cause(c.ctx), errTimedOut) {
		t.Fatalf("cancelled with %v, want the timeout", context.Cause(c.ctx))
	}
	got := h.comp.waitResults(t, 1)[0]
	if got.GetOk() || got.GetPending() || !strings.Contains(got.GetError(), "timed out after 2h") || got.GetBackup().GetBackupId() != "" {
		t.Fatalf("completed with %v, want a timeout error", got)
	}
	// The node is free again.
	if res := h.r.Start(h.ctx, order("run2", "full", time.Hour)); !res.GetPending() {
		t.Fatalf("next run after a timed-out one = %v, want pending", res)
	}
	h.take.waitStarted(t)
}

// TestTimeoutWithSlowCleanup: see TestTimedOutRunReportsOnceCleanedUp
// (rev_test.go), which replaced the test that the end was reported while
// the clean-up went on.

func TestCompletionRetriedUntilTaken(t *testing.T) {
	h := newHarness(t, func(d *Deps) { d.MinBackoff, d.MaxBackoff = time.Second, 4*time.Second })
	h.comp.fail = 4
	h.r.Start(h.ctx, order("run1", "full", time.Hour))
	h.take.waitStarted(t)
	h.take.finish <- takeOutcome{err: errors.New("the WAL this backup needs is not archived after 1m0s")}
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		h.clock.waitWaiter(t, d) // backoff doubles up to MaxBackoff
		h.clock.Advance(d)
	}
	got := h.comp.waitResults(t, 1)[0]
	if got.GetOk() || !strings.Contains(got.GetError(), "not archived") || got.GetId() != "run1" {
		t.Fatalf("completed with %v, want the backup's failure", got)
	}
	h.comp.mu.Lock()
	defer h.comp.mu.Unlock()
	if h.comp.attempts != 5 || h.comp.ids[0] != "run1" {
		t.Fatalf("%d attempts for %v, want 5 for run1", h.comp.attempts, h.comp.ids)
	}
}

func TestDeliveryStopsWhenTheContextEnds(t *testing.T) {
	h := newHarness(t, nil)
	h.comp.fail = 1 << 30
	ctx, cancel := context.WithCancel(h.ctx)
	h.r.Start(ctx, order("run1", "full", time.Hour))
	h.take.waitStarted(t)
	h.take.finish <- takeOutcome{m: manifest("20261207T120000F")}
	h.clock.waitWaiter(t, DefaultMinBackoff)
	cancel()
	done := make(chan struct{})
	go func() { h.r.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery went on after its context ended")
	}
}

func TestRemembersTheLastRuns(t *testing.T) {
	h := newHarness(t, func(d *Deps) { d.Remember = 2 })
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("run%d", i)
		if res := h.r.Start(h.ctx, order(id, "full", time.Hour)); !res.GetPending() {
			t.Fatalf("%s = %v", id, res)
		}
		h.take.waitStarted(t)
		h.take.finish <- takeOutcome{m: manifest(fmt.Sprintf("20261207T12000%dF", i))}
		h.comp.waitResults(t, i)
		testutil.WaitFor(t, 10*time.Second, "the node to be free", func() (bool, error) {
			h.r.mu.Lock()
			defer h.r.mu.Unlock()
			return h.r.running == nil, nil
		})
	}
	h.r.mu.Lock()
	n := len(h.r.runs)
	h.r.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d runs remembered, want 2", n)
	}
	if res := h.r.Start(h.ctx, order("run3", "full", time.Hour)); res.GetBackup().GetBackupId() != "20261207T120003F" {
		t.Fatalf("repeat of the last run = %v, want its result", res)
	}
}

func TestTimeoutCountsFromReceipt(t *testing.T) {
	h := newHarness(t, nil)
	received := h.clock.Now()
	h.clock.Advance(50 * time.Second) // behind another order in the session's queue
	if res := h.r.StartAt(h.ctx, order("run1", "full", time.Minute), received); !res.GetPending() {
		t.Fatalf("answer = %v, want pending", res)
	}
	c := h.take.waitStarted(t)
	h.clock.waitWaiter(t, 10*time.Second)
	h.clock.Advance(10 * time.Second)
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the backup was not cancelled a minute after the order's receipt")
	}
	if got := h.comp.waitResults(t, 1)[0]; !strings.Contains(got.GetError(), "timed out after 1m") {
		t.Fatalf("completed with %v, want a timeout", got)
	}
}

func TestExpiredOrderRefused(t *testing.T) {
	h := newHarness(t, nil)
	cmd := order("run1", "full", time.Hour)
	cmd.SentAt, cmd.Deadline, cmd.BudgetMs = timestamppb.New(h.clock.Now()), timestamppb.New(h.clock.Now().Add(time.Minute)), 60_000
	received := h.clock.Now()
	h.clock.Advance(time.Minute)
	res := h.r.StartAt(h.ctx, cmd, received)
	if res.GetPending() || !strings.Contains(res.GetError(), ErrExpired.Error()) {
		t.Fatalf("answer = %v, want refused as expired", res)
	}
	if n := h.take.nCalls(); n != 0 {
		t.Fatalf("an expired order took %d backup(s)", n)
	}
	// Within its budget it starts.
	if res := h.r.StartAt(h.ctx, cmd, h.clock.Now()); !res.GetPending() {
		t.Fatalf("answer within the budget = %v, want pending", res)
	}
	h.take.waitStarted(t)
}

// withTier is cmd, a Backup order, for tier.
func withTier(cmd *pgdrv1.AgentCommand, tier string) *pgdrv1.AgentCommand {
	cmd.GetBackup().Tier = tier
	return cmd
}
