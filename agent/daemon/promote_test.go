package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/lease"
	"github.com/pgdr/pgdr/agent/orders"
	"github.com/pgdr/pgdr/agent/watchdog"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fakePromotion is the local server's side of a promotion: a replica that
// promotes at once (finish) or only later (pg_promote returns false).
type fakePromotion struct {
	mu       sync.Mutex
	finish   bool          // pg_promote finishes within its wait
	promoted bool          // recovery has ended
	promotes int           // pg_promote calls
	wait     time.Duration // the last pg_promote's wait
	// finishErr fails Finish (after the end of recovery).
	finishErr error
}

func (f *fakePromotion) InRecovery(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.promoted, nil
}

func (f *fakePromotion) Promote(_ context.Context, wait time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.promotes++
	f.wait = wait
	if f.finish {
		f.promoted = true
	}
	return f.finish, nil
}

func (f *fakePromotion) Finish(context.Context) (string, error) {
	if f.finishErr != nil {
		return "", f.finishErr
	}
	return "promoted: timeline 2, lsn 0/5000000", nil
}

// TestPromoteFinishFailsAfterPromotion: review E. When the promotion
// completed but reading its timeline and LSN fails, the node is promoted:
// the answer is pending (the leader keeps it unsettled), never a plain
// failure, which the leader would take for an order that did not reach
// PostgreSQL.
func TestPromoteFinishFailsAfterPromotion(t *testing.T) {
	fp := &fakePromotion{finish: true, finishErr: errors.New("connection reset")}
	_, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
	res := cc.carryOut(context.Background(), promoteOrder(6, time.Now(), time.Now().Add(time.Minute)))
	if res.Ok || !res.Pending || fp.calls() != 1 {
		t.Fatalf("promoted, then Finish failed: %+v (pg_promote called %d times), want a pending answer", res, fp.calls())
	}
}
func (f *fakePromotion) Close() {}

func (f *fakePromotion) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.promotes
}

// epochClient answers Epoch as a leader recording primary at epoch.
type epochClient struct {
	pgdrv1.AgentServiceClient
	mu      sync.Mutex
	epoch   uint64
	primary string
	asked   int
	// now is the leader's clock in the answer (nil: an older coordinator
	// that sends none).
	now func() time.Time
	// left is the time the leader still waits for the command asked about,
	// on its monotonic clock (nil: it does not know the command).
	left func(id string) time.Duration
	// leader is the answering leader's name, sent when asked about a
	// command ("" : an older coordinator).
	leader string
}

func (c *epochClient) Epoch(_ context.Context, req *pgdrv1.EpochRequest, _ ...grpc.CallOption) (*pgdrv1.EpochResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked++
	r := &pgdrv1.EpochResponse{Epoch: c.epoch, Primary: c.primary}
	if c.now != nil {
		r.Now = timestamppb.New(c.now())
	}
	if req.GetCommandId() != "" {
		r.Leader = c.leader
	}
	if c.left != nil && req.GetCommandId() != "" {
		r.CommandWaiting, r.CommandLeftMs = true, c.left(req.GetCommandId()).Milliseconds()
	}
	return r, nil
}

func promoteDaemon(t *testing.T, fp *fakePromotion, leader *epochClient) (*Daemon, *carrier) {
	t.Helper()
	return promoteDaemonCfg(t, fp, leader, nil)
}

// promoteDaemonCfg is promoteDaemon with tweak applied to the
// configuration before the daemon is built.
func promoteDaemonCfg(t *testing.T, fp *fakePromotion, leader *epochClient, tweak func(*config.Config)) (*Daemon, *carrier) {
	t.Helper()
	cfg := testConfig(t, "") // node pg-a2
	if tweak != nil {
		tweak(cfg)
	}
	opt := options{openPromotion: func(context.Context) (orders.Promotion, error) { return fp, nil }}
	if leader != nil {
		opt.client = leader
	}
	d := build(cfg, nil, slog.New(slog.DiscardHandler), opt)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return d, &carrier{d: d, ctx: ctx}
}

// carrier hands commands to the daemon's session as a session does (the
// result is not sent), in the test's run context, as if received now.
type carrier struct {
	d   *Daemon
	ctx context.Context
}

func (c *carrier) carryOut(_ context.Context, cmd *pgdrv1.AgentCommand) *pgdrv1.CommandResult {
	return c.d.sess.CarryOut(c.ctx, cmd, c.d.clock())
}

// carryOutAt is carryOut of an order received at received.
func (c *carrier) carryOutAt(_ context.Context, cmd *pgdrv1.AgentCommand, received time.Time) *pgdrv1.CommandResult {
	return c.d.sess.CarryOut(c.ctx, cmd, received)
}

// margin and ttl are failover.safety_margin and failover.lease_ttl as the
// daemon uses them.
func margin(d *Daemon) time.Duration { return leaseConfig(d.cfg).SafetyMargin }
func ttl(d *Daemon) time.Duration    { return leaseConfig(d.cfg).TTL }

func promoteOrder(epoch uint64, issued time.Time, deadline time.Time) *pgdrv1.AgentCommand {
	c := &pgdrv1.AgentCommand{Id: "p1", Cluster: "main", Node: "pg-a2", Epoch: epoch, IssuedAt: timestamppb.New(issued),
		Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{Reason: "test"}}}
	if !deadline.IsZero() {
		c.Deadline = timestamppb.New(deadline)
	}
	return c
}

// TestPromoteOrder: issue 12 item 3, the agent's side. A promote order is
// carried out only while it is current: not past its deadline (it waited
// behind a long order), and only if the leader still records this node as
// primary at the order's epoch right before pg_promote. A pg_promote that
// does not finish is reported as pending, not as a failure, since
// PostgreSQL completes it later.
func TestPromoteOrder(t *testing.T) {
	ctx := context.Background()
	t.Run("ok", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		_, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
		res := c.carryOut(ctx, promoteOrder(6, time.Now(), time.Now().Add(time.Minute)))
		if !res.Ok || res.Pending || !strings.HasPrefix(res.Output, "promoted") || fp.calls() != 1 {
			t.Fatalf("current order: %+v (pg_promote called %d times)", res, fp.calls())
		}
	})
	t.Run("past its deadline", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		leader := &epochClient{epoch: 6, primary: "pg-a2"}
		_, c := promoteDaemon(t, fp, leader)
		res := c.carryOut(ctx, promoteOrder(6, time.Now().Add(-2*time.Minute), time.Now().Add(-time.Minute)))
		if res.Ok || res.Pending || !strings.Contains(res.Error, "deadline") || fp.calls() != 0 {
			t.Fatalf("stale order: %+v (pg_promote called %d times)", res, fp.calls())
		}
	})
	t.Run("superseded epoch", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		leader := &epochClient{epoch: 7, primary: "pg-b1"}
		d, c := promoteDaemon(t, fp, leader)
		res := c.carryOut(ctx, promoteOrder(6, time.Now(), time.Now().Add(time.Minute)))
		if res.Ok || res.Pending || !strings.Contains(res.Error, "superseded") || fp.calls() != 0 {
			t.Fatalf("superseded order: %+v (pg_promote called %d times)", res, fp.calls())
		}
		if d.epoch.Current() != 7 {
			t.Fatalf("the leader's epoch 7 was not taken: %d", d.epoch.Current())
		}
	})
	t.Run("no leader to ask", func(t *testing.T) {
		fp := &fakePromotion{finish: true}
		_, c := promoteDaemon(t, fp, nil)
		res := c.carryOut(ctx, promoteOrder(6, time.Now(), time.Now().Add(time.Minute)))
		if res.Ok || fp.calls() != 0 {
			t.Fatalf("no session: %+v (pg_promote called %d times)", res, fp.calls())
		}
	})
	t.Run("pending", func(t *testing.T) {
		fp := &fakePromotion{finish: false}
		leader := &epochClient{epoch: 6, primary: "pg-a2"}
		d, c := promoteDaemon(t, fp, leader)
		res := c.carryOut(ctx, promoteOrder(6, time.Now(), time.Now().Add(time.Minute)))
		if res.Ok || !res.Pending || !strings.Contains(res.Error, "promotion pending") {
			t.Fatalf("unfinished pg_promote: %+v", res)
		}
		if !d.failsafe.Promoting() {
			t.Fatal("a pending promotion must acknowledge no failsafe ping")
		}
		// The leader gave up and moved on; the promotion then completes:
		// the watcher fences this node instead of leaving it writable.
		leader.mu.Lock()
		leader.epoch, leader.primary = 7, "pg-b1"
		leader.mu.Unlock()
		fp.mu.Lock()
		fp.promoted = true
		fp.mu.Unlock()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if fi, _ := health.ReadFenced(d.cfg.Postgres.PGData); fi != nil {
				if !strings.Contains(fi.Reason, "completed late") {
					t.Fatalf("fenced for %q", fi.Reason)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a late promotion superseded at the leader was not fenced within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// TestExpiredOrderKeepsEpoch: issue 12 review D3. An order refused for its
// deadline does not move the agent's epoch: a late fence at epoch 7 must
// not make the agent refuse the next promote at the recorded epoch 6.
func TestExpiredOrderKeepsEpoch(t *testing.T) {
	ctx := context.Background()
	fp := &fakePromotion{finish: true}
	d, c := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
	d.epoch.See(6)
	fence := &pgdrv1.AgentCommand{Id: "f1", Cluster: "main", Node: "pg-a2", Epoch: 7, IssuedAt: timestamppb.New(time.Now().Add(-2 * time.Minute)),
		Deadline: timestamppb.New(time.Now().Add(-time.Minute)), Kind: &pgdrv1.AgentCommand_Fence{Fence: &pgdrv1.Fence{Reason: "test"}}}
	if res := c.carryOut(ctx, fence); res.Ok || !strings.Contains(res.Error, "deadline") {
		t.Fatalf("expired fence: %+v", res)
	}
	if e := d.epoch.Current(); e != 6 {
		t.Fatalf("an expired order at epoch 7 moved the agent's epoch to %d", e)
	}
	res := c.carryOut(ctx, promoteOrder(6, time.Now(), time.Now().Add(time.Minute)))
	if !res.Ok || fp.calls() != 1 {
		t.Fatalf("promote at the recorded epoch 6 after an expired fence at 7: %+v", res)
	}
}

// promoteOrderSettleBy is promoteOrder with a settle deadline.
func promoteOrderSettleBy(epoch uint64, deadline, settleBy time.Time) *pgdrv1.AgentCommand {
	c := promoteOrder(epoch, time.Now(), deadline)
	c.GetPromote().SettleBy = timestamppb.New(settleBy)
	return c
}

// waitFenced waits for the fenced marker and returns its reason.
func waitFenced(t *testing.T, d *Daemon, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if fi, _ := health.ReadFenced(d.cfg.Postgres.PGData); fi != nil {
			return fi.Reason
		}
		if time.Now().After(deadline) {
			t.Fatalf("not fenced within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPromoteWatchSettleBy: review D10, the agent's side. A promotion
// ordered with a settle deadline that neither completes nor gets a lease
// by that deadline (less the safety margin) is fenced by the watcher, even
// while the leader still records this node at the order's epoch (the
// leader may count it as settled after the deadline and promote another
// member). While it is guarded, the watchdog's heartbeat carries the
// give-up time although the lease loop (a replica) has nothing to guard,
// so the watchdog fences if the agent is gone; the guard is kept in pgdata
// for a restarted agent, and ends when the node is fenced.
func TestPromoteWatchSettleBy(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		what     string
		complete bool // the promotion completes, but no lease is granted
	}{
		{"pending", false},
		{"completed without a lease", true},
	} {
		t.Run(c.what, func(t *testing.T) {
			fp := &fakePromotion{finish: false}
			d, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"}) // stays current
			settleBy := time.Now().Add(margin(d) + 2*time.Second)
			res := cc.carryOut(ctx, promoteOrderSettleBy(6, time.Now().Add(time.Minute), settleBy))
			if res.Ok || !res.Pending {
				t.Fatalf("unfinished pg_promote: %+v", res)
			}
			hb, _ := d.wd.Heartbeat()
			if hb.RemainingMs <= 0 {
				t.Fatalf("heartbeat during a guarded pending promotion: %+v, want the give-up time as the watchdog's deadline", hb)
			}
			if want := time.Until(settleBy.Add(-margin(d))).Milliseconds(); hb.RemainingMs > want+50 {
				t.Fatalf("heartbeat remaining %d ms, later than the give-up time (%d ms)", hb.RemainingMs, want)
			}
			if _, err := os.Stat(d.guard.Path()); err != nil {
				t.Fatalf("the guard is not recorded in pgdata: %v", err)
			}
			if c.complete {
				fp.mu.Lock()
				fp.promoted = true
				fp.mu.Unlock()
			}
			reason := waitFenced(t, d, 20*time.Second)
			if !strings.Contains(reason, "settle deadline") || time.Now().Before(settleBy.Add(-margin(d))) {
				t.Fatalf("fenced at %s (give-up %s) for %q", time.Now(), settleBy.Add(-margin(d)), reason)
			}
			if time.Now().After(settleBy) {
				t.Fatalf("fenced only after the settle deadline")
			}
			testutil.WaitFor(t, 10*time.Second, "the guard to end", func() (bool, error) {
				hb, _ := d.wd.Heartbeat()
				_, err := os.Stat(d.guard.Path())
				return hb.RemainingMs == 0 && errors.Is(err, os.ErrNotExist), fmt.Errorf("heartbeat %+v, record %v", hb, err)
			})
		})
	}
}

// TestPromoteWatchSettleByGranted: a guarded promotion that completes and
// is granted a lease is not fenced at its give-up time; the guard ends.
func TestPromoteWatchSettleByGranted(t *testing.T) {
	fp := &fakePromotion{finish: true}
	d, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
	d.lease.Set(lease.NewLease(time.Now(), ttl(d), margin(d)))
	settleBy := time.Now().Add(margin(d) + 2*time.Second)
	res := cc.carryOut(context.Background(), promoteOrderSettleBy(6, time.Now().Add(time.Minute), settleBy))
	if !res.Ok {
		t.Fatalf("promote: %+v", res)
	}
	d.lease.Update(func(l *lease.Lease) {
		l.Answer("pg-a2", 6, time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true, Epoch: 6, Primary: "pg-a2", TtlMs: 5000})
	})
	testutil.WaitFor(t, 10*time.Second, "the guard to end", func() (bool, error) {
		_, err := os.Stat(d.guard.Path())
		return errors.Is(err, os.ErrNotExist), fmt.Errorf("record %v", err)
	})
	time.Sleep(time.Until(settleBy)) // past the give-up time: nothing fences it
	if fi, _ := health.ReadFenced(d.cfg.Postgres.PGData); fi != nil {
		t.Fatalf("a promoted node holding a lease was fenced: %s", fi.Reason)
	}
}

// TestPromoteWatchResumed: a guard a previous agent process left in pgdata
// (it died while a promotion was guarded) is resumed by the next one: its
// heartbeat carries the give-up time, and the node is fenced at it unless
// a lease is granted.
func TestPromoteWatchResumed(t *testing.T) {
	fp := &fakePromotion{finish: false}
	d, _ := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
	d.bootIDPath = filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(d.bootIDPath, []byte("boot-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	giveUp := time.Now().Add(time.Second)
	mono, ok := watchdog.MonoNow()
	if !ok {
		t.Skip("no CLOCK_MONOTONIC on this platform")
	}
	// The wall-clock give_up says an hour later: only the monotonic one counts.
	if err := os.WriteFile(d.guard.Path(), []byte(fmt.Sprintf(`{"epoch": 6, "give_up": %q, "give_up_mono_ns": %d, "boot_id": "boot-1"}`,
		giveUp.Add(time.Hour).UTC().Format(time.RFC3339Nano), mono+int64(time.Second))), 0o600); err != nil {
		t.Fatal(err)
	}
	d.resumePendingPromotion(t.Context())
	if hb, _ := d.wd.Heartbeat(); hb.RemainingMs <= 0 {
		t.Fatalf("heartbeat after resuming a guard: %+v", hb)
	}
	if reason := waitFenced(t, d, 20*time.Second); !strings.Contains(reason, "settle deadline") || time.Now().Before(giveUp) || time.Now().After(giveUp.Add(5*time.Second)) {
		t.Fatalf("fenced at %s (give-up %s) for %q", time.Now(), giveUp, reason)
	}
}

// TestPromoteWatchResumedOtherBoot: review C of D10. A guard recorded in
// another boot (CLOCK_MONOTONIC restarted), or without a monotonic
// give-up time, counts as passed: the node is fenced at once unless a
// lease was granted, whatever the wall-clock give_up says (a promotion
// that completed before the reboot stays completed).
func TestPromoteWatchResumedOtherBoot(t *testing.T) {
	mono, ok := watchdog.MonoNow()
	if !ok {
		t.Skip("no CLOCK_MONOTONIC on this platform")
	}
	for _, rec := range []string{
		fmt.Sprintf(`{"epoch": 6, "give_up": %q, "give_up_mono_ns": %d, "boot_id": "boot-0"}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano), mono+int64(time.Hour)),
		fmt.Sprintf(`{"epoch": 6, "give_up": %q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)),
	} {
		fp := &fakePromotion{finish: false}
		d, _ := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
		d.bootIDPath = filepath.Join(t.TempDir(), "boot_id")
		if err := os.WriteFile(d.bootIDPath, []byte("boot-1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.guard.Path(), []byte(rec), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		d.resumePendingPromotion(t.Context())
		if reason := waitFenced(t, d, 20*time.Second); !strings.Contains(reason, "settle deadline") || time.Since(start) > 10*time.Second {
			t.Fatalf("record %s: fenced after %s for %q, want at once", rec, time.Since(start), reason)
		}
	}
}

// TestPromoteGuardReachesWatchdog: with a watchdog, pg_promote is called
// only once a heartbeat carrying the guard's give-up time was written to
// it (so that the agent's death right after pg_promote is covered); when
// none is written in time, the promotion is refused without pg_promote.
func TestPromoteGuardReachesWatchdog(t *testing.T) {
	for _, reads := range []bool{true, false} {
		fp := &fakePromotion{finish: false}
		d, cc := promoteDaemon(t, fp, &epochClient{epoch: 6, primary: "pg-a2"})
		d.lease.Set(lease.NewLease(time.Now(), ttl(d), margin(d)))
		// A child that keeps the heartbeats it reads (the guard's seq is
		// taken once one is written to it: agent/watchdog's
		// TestGuardReachesWatchdog).
		out := filepath.Join(t.TempDir(), "heartbeats")
		d.EnableWatchdog([]string{"/bin/sh", "-c", `exec cat >"$1"`, "watchdog", out})
		if reads { // the watchdog's loop runs the child
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			go func() { defer close(stopped); d.wd.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-stopped })
		}
		res := cc.carryOut(context.Background(), promoteOrderSettleBy(6, time.Now().Add(time.Minute), time.Now().Add(time.Minute)))
		if !reads {
			if res.Ok || res.Pending || !strings.Contains(res.Error, "watchdog") || fp.calls() != 0 {
				t.Fatalf("no watchdog reading: %+v (pg_promote called %d times)", res, fp.calls())
			}
			if _, err := os.Stat(d.guard.Path()); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused promotion left its guard: %v", err)
			}
			continue
		}
		if !res.Pending || fp.calls() != 1 {
			t.Fatalf("watchdog reading: %+v (pg_promote called %d times)", res, fp.calls())
		}
		testutil.WaitFor(t, 10*time.Second, "the watchdog to get the guard's heartbeat", func() (bool, error) {
			b, err := os.ReadFile(out)
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var hb watchdog.Heartbeat
				if json.Unmarshal([]byte(l), &hb) == nil && hb.RemainingMs > 0 {
					return true, nil
				}
			}
			return false, fmt.Errorf("heartbeats %q, %v", b, err)
		})
	}
}
