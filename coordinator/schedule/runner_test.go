package schedule

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/coordinator/policy"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakeLeader is the Server of a Runner over a real FSM applied in
// process (no Raft), with agents that are a list of orders.
type fakeLeader struct {
	t        *testing.T
	mu       sync.Mutex
	f        *fsm.FSM
	index    uint64
	now      time.Time
	members  []Member
	orders   []*pgdrv1.AgentCommand
	noStream bool
	// follower: Leading is false; failRecord: Record fails; notReady:
	// Ready's reason when set.
	follower, failRecord bool
	notReady             string
	// failResults: Record fails for results only.
	failResults bool
}

func (l *fakeLeader) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.follower
}

func (l *fakeLeader) Ready() (bool, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.notReady == "", l.notReady
}

func (l *fakeLeader) clock() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.now
}

func (l *fakeLeader) set(now string) {
	l.mu.Lock()
	l.now = at(now)
	l.mu.Unlock()
}

func (l *fakeLeader) ClusterNames() []string { return []string{"main"} }

func (l *fakeLeader) Cluster(name string) (*pgdrv1.Cluster, bool) { return l.f.Cluster(name) }

func (l *fakeLeader) Members(*pgdrv1.Cluster) []Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.members)
}

func (l *fakeLeader) apply(actor string, typ pgdrv1.CommandType, p proto.Message) error {
	cmd, err := fsm.NewCommand(typ, p, actor, l.clock())
	if err != nil {
		return err
	}
	b, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.index++
	idx := l.index
	l.mu.Unlock()
	res := l.f.Apply(&raft.Log{Index: idx, Data: b}).(*pgdrv1.ApplyResult)
	if !res.GetOk() {
		return errors.New(res.GetError())
	}
	return nil
}

func (l *fakeLeader) Record(_ context.Context, actor string, rec *pgdrv1.RecordBackupRun) error {
	l.mu.Lock()
	fail := l.failRecord || l.failResults && rec.GetResult() != nil
	l.mu.Unlock()
	if fail {
		return errors.New("raft: leadership lost while committing log")
	}
	return l.apply(actor, pgdrv1.CommandType_COMMAND_TYPE_RECORD_BACKUP_RUN, rec)
}

func (l *fakeLeader) Order(_ context.Context, cmd *pgdrv1.AgentCommand) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.noStream {
		return errors.New("the agent of " + cmd.GetNode() + ": no open command stream")
	}
	l.orders = append(l.orders, cmd)
	return nil
}

func (l *fakeLeader) lastOrder() *pgdrv1.AgentCommand {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.orders) == 0 {
		return nil
	}
	return l.orders[len(l.orders)-1]
}

func (l *fakeLeader) runs() []*pgdrv1.BackupRun {
	c, _ := l.f.Cluster("main")
	return c.GetBackupRuns()
}

func (l *fakeLeader) last() *pgdrv1.BackupRun {
	r := l.runs()
	if len(r) == 0 {
		return nil
	}
	return r[len(r)-1]
}

func newFakeLeader(t *testing.T) *fakeLeader {
	l := &fakeLeader{t: t, f: fsm.New(slog.New(slog.DiscardHandler), fsm.Options{}), now: at("2026-05-01 09:30:00"), members: healthy()}
	for _, n := range []string{"pg-1", "pg-2", "pg-3"} {
		if err := l.apply("agent:"+n, pgdrv1.CommandType_COMMAND_TYPE_REGISTER_MEMBER, &pgdrv1.RegisterMember{Member: &pgdrv1.Member{Cluster: "main", Name: n, Region: "r1"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.apply("coordinator:c1", pgdrv1.CommandType_COMMAND_TYPE_SET_PRIMARY, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-1"}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *fakeLeader) runner(name string) *Runner {
	ids := 0
	return NewRunner(Config{Server: l, Name: name, Log: slog.New(slog.DiscardHandler), Grace: time.Minute, Now: l.clock,
		NewID: func() string { ids++; return name + "-" + string(rune('a'+ids-1)) }})
}

// TestRunner: the leader's loop over a real FSM: a due tier becomes an
// intent, an order to the least-lagging replica and a "sent" step; the
// agent's pending answer is the "accepted" step and its final answer the
// result with sizes; a run nobody answers is recorded as timed out, and
// a late answer then changes nothing; an order that cannot be sent ends
// the run as failed; pause stops scheduling and resume makes one catch-up
// run; a new leader records the answer to an order of the previous one.
func TestRunner(t *testing.T) {
	ctx := context.Background()
	l := newFakeLeader(t)
	p := tiers(hourly, daily)
	p.UpdatedAt = time.Time{}
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: policy.ToProto(p)}); err != nil {
		t.Fatal(err)
	}
	r := l.runner("c1")
	r.Tick(ctx)
	if len(l.runs()) != 0 {
		t.Fatalf("a run before any slot: %v", l.runs())
	}

	// 10:00 the hourly incr is due; no full yet, so it runs a full, on pg-3.
	l.set("2026-05-01 10:00:01")
	r.Tick(ctx)
	run, order := l.last(), l.lastOrder()
	if run == nil || order == nil {
		t.Fatal("no run started at the hourly slot")
	}
	b := order.GetBackup()
	if run.GetTier() != "hourly" || run.GetType() != "full" || run.GetNode() != "pg-3" || run.GetSentAt() == nil ||
		run.GetSlot().AsTime() != at("2026-05-01 10:00:00") || run.GetRequestedBy() != "coordinator:c1" ||
		!strings.Contains(run.GetReason(), "runs a full instead of incr") {
		t.Fatalf("run recorded as %v", run)
	}
	if order.GetId() != run.GetId() || order.GetNode() != "pg-3" || order.GetEpoch() != 1 || b.GetRunId() != run.GetId() ||
		b.GetTier() != "hourly" || b.GetType() != "full" || b.GetTimeoutMs() != (2*time.Hour).Milliseconds() ||
		order.GetDeadline().AsTime() != at("2026-05-01 10:00:01").Add(DefaultStartBudget) {
		t.Fatalf("order %v", order)
	}
	r.Tick(ctx)
	if len(l.orders) != 1 {
		t.Fatal("a second order while a run is in flight")
	}
	if ok, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Pending: true}); !ok || err != nil {
		t.Fatalf("pending answer: %v %v", ok, err)
	}
	if ok, _ := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-2", Ok: true}); ok {
		t.Fatal("an answer from another node was taken")
	}
	l.set("2026-05-01 10:40:00")
	if ok, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Ok: true,
		Backup: &pgdrv1.BackupReport{BackupId: "20260501T100001F", SizeBytes: 100, StoredBytes: 40}}); !ok || err != nil {
		t.Fatalf("final answer: %v %v", ok, err)
	}
	if run = l.last(); run.GetResult() != "ok" || run.GetAcceptedAt() == nil || run.GetSizeBytes() != 100 || run.GetStoredBytes() != 40 ||
		run.GetBackupId() != "20260501T100001F" || run.GetFinishedAt().AsTime() != at("2026-05-01 10:40:00") {
		t.Fatalf("finished run %v", run)
	}
	r.Tick(ctx)
	if len(l.orders) != 1 {
		t.Fatal("a run although nothing is due")
	}

	// 11:00: an incr now (a full exists); the agent never answers.
	l.set("2026-05-01 11:00:02")
	r.Tick(ctx)
	if run = l.last(); run.GetType() != "incr" || run.GetResult() != "" {
		t.Fatalf("11:00 run %v", run)
	}
	l.set("2026-05-01 13:00:30") // over the timeout, within the grace
	r.Tick(ctx)
	if l.last().GetResult() != "" {
		t.Fatal("cancelled within the grace")
	}
	l.set("2026-05-01 13:01:03")
	r.Tick(ctx) // over the timeout and the grace: a cancel order, the run cleans up
	if got := l.runs()[1]; got.GetResult() != "" || got.GetCancelResult() != "timeout" || !strings.Contains(got.GetCancelNote(), "no result within the timeout") {
		t.Fatalf("timed-out run %v", got)
	}
	if o := l.lastOrder().GetBackup(); !o.GetCancel() || o.GetRunId() != run.GetId() {
		t.Fatalf("no cancel order after the timeout: %v", l.lastOrder())
	}
	r.Tick(ctx)
	if got := l.last(); got.GetId() != run.GetId() {
		t.Fatalf("a new run while the timed-out one cleans up: %v", got)
	}
	// The agent answers the cancel once its clean-up ended.
	if ok, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Error: "cancelled and cleaned up",
		Backup: &pgdrv1.BackupReport{RunId: run.GetId()}}); !ok || err != nil {
		t.Fatalf("answer to the cancel: %v %v", ok, err)
	}
	if got := l.runs()[1]; got.GetResult() != "timeout" || !strings.Contains(got.GetError(), "cancelled and cleaned up") {
		t.Fatalf("timed-out run %v", got)
	}
	if ok, _ := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Ok: true}); ok {
		t.Fatal("a late answer after the timeout was recorded")
	}

	// The agent has no command stream: the catch-up run is recorded as
	// not started, and the tier is tried again on the next tick.
	l.mu.Lock()
	l.noStream = true
	l.mu.Unlock()
	r.Tick(ctx)
	if run = l.last(); run.GetResult() != "not_started" || !strings.Contains(run.GetError(), "order not sent: the agent of pg-3: no open command stream") ||
		run.GetMissed() != 2 {
		t.Fatalf("run without a stream %v", run)
	}
	n := len(l.runs())
	l.mu.Lock()
	l.noStream = false
	l.mu.Unlock()
	r.Tick(ctx)
	if run = l.last(); len(l.runs()) != n+1 || run.GetResult() != "" || run.GetMissed() != 2 {
		t.Fatalf("a run that never started is not tried again: %v", run)
	}
	if _, err := r.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Ok: true,
		Backup: &pgdrv1.BackupReport{RunId: run.GetId(), Type: "incr"}}); err != nil {
		t.Fatal(err)
	}
	n = len(l.runs())
	r.Tick(ctx)
	if len(l.runs()) != n {
		t.Fatal("a run that ended is retried before the next slot")
	}
	l.mu.Lock()
	l.noStream = false
	l.mu.Unlock()

	// Paused over three slots: nothing; resumed: one catch-up run.
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED, &pgdrv1.SetPaused{Cluster: "main", Paused: true}); err != nil {
		t.Fatal(err)
	}
	for _, now := range []string{"2026-05-01 14:00:01", "2026-05-01 15:00:01", "2026-05-01 16:00:01"} {
		l.set(now)
		r.Tick(ctx)
	}
	if len(l.runs()) != n {
		t.Fatal("a run while paused")
	}
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_PAUSED, &pgdrv1.SetPaused{Cluster: "main", Paused: false}); err != nil {
		t.Fatal(err)
	}
	r.Tick(ctx)
	if run = l.last(); len(l.runs()) != n+1 || run.GetMissed() != 3 || run.GetTier() != "hourly" {
		t.Fatalf("after resume: %d runs, last %v", len(l.runs()), run)
	}

	// The leader dies with the run in flight; the next one records the
	// agent's answer to the old leader's order.
	r2 := l.runner("c2")
	orders := len(l.orders)
	r2.Tick(ctx)
	r2.Tick(ctx)
	if len(l.runs()) != n+1 {
		t.Fatal("the new leader started a second run")
	}
	// The agent had not accepted it: the new leader orders it once more,
	// under the same run id (the agent carries a run id out once).
	if len(l.orders) != orders+1 || l.lastOrder().GetId() != run.GetId() || l.lastOrder().GetBackup().GetRunId() != run.GetId() {
		t.Fatalf("orders after the change of leader: %d new, last %v", len(l.orders)-orders, l.lastOrder())
	}
	if ok, err := r2.Answer(ctx, &pgdrv1.CommandResult{Id: run.GetId(), Cluster: "main", Node: "pg-3", Error: "unknown command *pgdrv1.AgentCommand_Backup"}); !ok || err != nil {
		t.Fatalf("answer to the new leader: %v %v", ok, err)
	}
	if run = l.last(); run.GetResult() != "failed" || run.GetError() != "unknown command *pgdrv1.AgentCommand_Backup" {
		t.Fatalf("run answered to the new leader %v", run)
	}

	// Manual: refused while busy, naming the run; otherwise started.
	l.set("2026-05-01 16:10:00")
	got, err := r2.RunNow(ctx, "main", "daily", "admin:alice")
	if err != nil || got.GetTier() != "daily" || got.GetType() != "full" || got.GetSlot() != nil {
		t.Fatalf("manual run: %v %v", got, err)
	}
	if l.last().GetRequestedBy() != "admin:alice" || !strings.Contains(l.last().GetReason(), "run on request of admin:alice") {
		t.Fatalf("manual run recorded as %v", l.last())
	}
	if _, err := r2.RunNow(ctx, "main", "hourly", "admin:bob"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), got.GetId()) {
		t.Fatalf("manual run while busy: %v", err)
	}
}

// TestRunnerWarmUp: a new leader has no health reports yet; Run does not
// decide before its warm-up (a standby-only slot would be skipped for
// want of a healthy replica), then evaluates at once.
func TestRunnerWarmUp(t *testing.T) {
	l := newFakeLeader(t)
	l.members = nil // nothing reported yet
	p := tiers(daily, nightly)
	if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: policy.ToProto(p)}); err != nil {
		t.Fatal(err)
	}
	l.set("2026-05-02 02:30:01") // both tiers due
	r := NewRunner(Config{Server: l, Name: "c1", Log: slog.New(slog.DiscardHandler), Now: l.clock, WarmUp: 300 * time.Millisecond, Every: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	time.Sleep(100 * time.Millisecond)
	if n := len(l.runs()); n != 0 {
		t.Fatalf("%d runs recorded during the warm-up", n)
	}
	l.mu.Lock()
	l.members = healthy()
	l.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for len(l.runs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if run := l.last(); run == nil || run.GetResult() != "" || run.GetTier() != "daily" || run.GetNode() != "pg-3" {
		t.Fatalf("first run after the warm-up: %v", run)
	}
}

// TestRunnerResendTimeLeft: a run a new leader inherited, not accepted by
// its agent, is ordered again with only what is left of its timeout
// (started_at + timeout − now): the agent counts the order's timeout from
// its arrival, and with the tier's full timeout a late repeat would still
// run after the leader recorded it timed out and started another run
// elsewhere — two backups of one cluster at once (invariant 9). When
// nothing is left the run is not ordered again, and is recorded timed out
// once the grace has passed too.
func TestRunnerResendTimeLeft(t *testing.T) {
	const started = "2026-05-01 10:00:01" // the hourly tier's run, timeout 2h
	cases := []struct {
		name string
		now  string // when the new leader ticks
		// left: the timeout of the repeat order; 0: no order.
		left time.Duration
		// timedOut: the run is recorded timed out (past its timeout and
		// the grace); else it stays in flight.
		timedOut bool
	}{
		{"at once", started, 2 * time.Hour, false},
		{"within a minute", "2026-05-01 10:00:31", 2*time.Hour - 30*time.Second, false},
		{"an hour and a half later", "2026-05-01 11:30:01", 30 * time.Minute, false},
		{"a millisecond left", "2026-05-01 12:00:00.999", time.Millisecond, false},
		{"at its timeout", "2026-05-01 12:00:01", 0, false},
		{"within the grace", "2026-05-01 12:00:30", 0, false},
		// The new leader counts the grace from its takeover: it was not
		// there to see the run's timeout pass.
		{"past the grace", "2026-05-01 12:01:01", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := newFakeLeader(t)
			p := tiers(hourly)
			p.UpdatedAt = time.Time{}
			if err := l.apply("admin:alice", pgdrv1.CommandType_COMMAND_TYPE_SET_BACKUP_POLICY, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: policy.ToProto(p)}); err != nil {
				t.Fatal(err)
			}
			// The first leader records the intent and dies before the
			// order goes out.
			l.set(started)
			if err := l.Record(ctx, "coordinator:c1", &pgdrv1.RecordBackupRun{Cluster: "main", Phase: &pgdrv1.RecordBackupRun_Intent{
				Intent: &pgdrv1.BackupRun{Id: "c1-a", Tier: "hourly", Type: "full", Node: "pg-3", TimeoutMs: (2 * time.Hour).Milliseconds()}}}); err != nil {
				t.Fatal(err)
			}
			run := l.last()
			if run.GetResult() != "" || run.GetAcceptedAt() != nil {
				t.Fatalf("setup: run %v", run)
			}

			l.mu.Lock()
			l.now = atMs(tc.now)
			l.mu.Unlock()
			orders := len(l.orders)
			r2 := l.runner("c2")
			r2.Tick(ctx)
			r2.Tick(ctx)
			// The second tick may start the next run once this one timed
			// out: look at this one, and at the orders for it.
			var got *pgdrv1.BackupRun
			for _, br := range l.runs() {
				if br.GetId() == run.GetId() {
					got = br
				}
			}
			var repeats []*pgdrv1.AgentCommand
			for _, o := range l.orders[orders:] {
				if o.GetBackup().GetRunId() == run.GetId() {
					repeats = append(repeats, o)
				}
			}
			switch {
			case tc.timedOut:
				if got.GetId() != run.GetId() || got.GetCancelResult() != ResultTimeout || !strings.Contains(got.GetCancelNote(), "no result within the timeout") {
					t.Fatalf("run past its timeout and the grace recorded as %v", got)
				}
			case got.GetId() != run.GetId() || got.GetResult() != "":
				t.Fatalf("run within its timeout or grace recorded as %v", got)
			}
			if tc.left == 0 {
				if len(repeats) != 0 {
					t.Fatalf("ordered again with nothing left of its timeout: %v", repeats[0])
				}
				return
			}
			if len(repeats) != 1 {
				t.Fatalf("%d repeat orders, want one", len(repeats))
			}
			o := repeats[0]
			if o.GetBackup().GetRunId() != run.GetId() || o.GetBackup().GetTimeoutMs() != tc.left.Milliseconds() {
				t.Fatalf("repeat order carries timeout_ms %d, want %d (what is left of the run's timeout)",
					o.GetBackup().GetTimeoutMs(), tc.left.Milliseconds())
			}
		})
	}
}

// atMs is at with optional fractional seconds.
func atMs(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05.999", s)
	if err != nil {
		panic(err)
	}
	return t
}
