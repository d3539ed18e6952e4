package orders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/agent/watchdog"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// promoteWait bounds pg_promote's own wait.
const promoteWait = 60 * time.Second

// Promoter carries out promote orders and watches the promotions left
// pending (Watch).
type Promoter struct {
	*base
	// mu guards watching (a pending promotion is watched) and giveUp (the
	// watched promotion's give-up time, the latest of the guarded orders
	// it watches; nil: not guarded).
	mu       sync.Mutex
	watching bool
	giveUp   watchdog.GiveUpTime
}

// pgPromotion is a promotion over a connection to the local server.
type pgPromotion struct {
	log  *slog.Logger
	conn *pgx.Conn
	// gate: lease-gated commits are on; PostgreSQL's setting must name
	// the commit gate before the server turns writable (agent/commitgate).
	gate bool
}

// OpenPGPromotion opens a promotion over a connection to the local server.
func OpenPGPromotion(ctx context.Context, pg *pgctl.Controller, log *slog.Logger) (Promotion, error) {
	conn, err := pg.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to the local server: %w", err)
	}
	return &pgPromotion{log: log, conn: conn}, nil
}

func (p *pgPromotion) InRecovery(ctx context.Context) (bool, error) {
	var in bool
	err := p.conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in)
	return in, err
}

func (p *pgPromotion) Promote(ctx context.Context, wait time.Duration) (bool, error) {
	if p.gate {
		// The gate settles the setting whenever it connects, replicas
		// included; a standby whose gate never did (or whose setting was
		// changed by hand) gets it here, before it takes a write, so that
		// its first commits wait for the gate and the first lease.
		if err := settleGate(ctx, p.conn); err != nil {
			return false, fmt.Errorf("refusing to promote with failover.lease_gated_commits on: %w", err)
		}
	}
	var done bool
	err := p.conn.QueryRow(ctx, fmt.Sprintf("SELECT pg_promote(true, %d)", max(int(wait.Seconds()), 1))).Scan(&done)
	return done, err
}

func (p *pgPromotion) Finish(ctx context.Context) (string, error) {
	// A checkpoint puts the new timeline into pg_control at once, so the
	// old primary can be rewound from this one without waiting.
	if _, err := p.conn.Exec(ctx, "CHECKPOINT"); err != nil {
		p.log.Warn("checkpoint after the promotion", "err", err)
	}
	var lsn, file string
	if err := p.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())").Scan(&lsn, &file); err != nil {
		return "", err
	}
	tli, _ := strconv.ParseUint(file[:min(8, len(file))], 16, 32)
	return fmt.Sprintf("promoted: timeline %d, lsn %s", tli, lsn), nil
}

func (p *pgPromotion) Close() { p.conn.Close(context.Background()) }

func (x *Promoter) openPromotion(ctx context.Context) (Promotion, error) {
	if x.OpenPromotion != nil {
		return x.OpenPromotion(ctx)
	}
	p, err := OpenPGPromotion(ctx, x.pg, x.log)
	if pp, ok := p.(*pgPromotion); ok {
		pp.gate = x.cfg.Failover.LeaseGatedCommits.On()
	}
	return p, err
}

// settleGate makes PostgreSQL's synchronous_standby_names on conn name
// the commit gate (keeping the coordinator's value, commitgate.Settle)
// and waits until this session sees it.
func settleGate(ctx context.Context, conn *pgx.Conn) error {
	if _, err := commitgate.Settle(ctx, conn, commitgate.DefaultAppName, true); err != nil {
		return err
	}
	return waitCond(ctx, syncWait, "synchronous_standby_names naming the commit gate", func(ctx context.Context) (bool, error) {
		_, gated, err := commitgate.Requested(ctx, conn, commitgate.DefaultAppName)
		return gated, err
	})
}

// ErrPromotionPending marks a promotion that was asked of PostgreSQL and
// has not finished: PostgreSQL does not cancel it, it completes once
// replay catches up. The order is reported as pending (not failed), so the
// leader fences this node (or waits for it) before it promotes another.
var ErrPromotionPending = errors.New("promotion pending")

// Promotion timings: pg_promote's wait ends this long (at most a quarter
// of the time left) before the order's deadline, so that the answer
// reaches the leader while it still waits;
// a pending promotion is watched every promoteWatchInterval.
const (
	promoteAnswerMargin  = 5 * time.Second
	promoteWatchInterval = 500 * time.Millisecond
)

// promoteWaitFor is pg_promote's wait given the time left before the
// order's deadline (ok false: no deadline), ending min(promoteAnswerMargin,
// left/4) before it; below a second it is too short to ask (too late).
func promoteWaitFor(left time.Duration, ok bool) (wait time.Duration, tooLate bool) {
	if !ok {
		return promoteWait, false
	}
	wait = min(promoteWait, left-min(promoteAnswerMargin, left/4))
	return wait, wait < time.Second
}

// leaderLeft is the time left before the order's deadline on the leader's
// clock, as of the end of the Epoch call that read it: the leader read its
// clock (leaderNow) somewhere within the call, which took rtt on the
// agent's monotonic clock, so at most leaderNow + rtt had passed on the
// leader's clock by then. ok is false without a deadline or without the
// leader's clock (an older coordinator).
func leaderLeft(leaderDeadline, leaderNow time.Time, rtt time.Duration) (left time.Duration, ok bool) {
	if leaderDeadline.IsZero() || leaderNow.IsZero() {
		return 0, false
	}
	return leaderDeadline.Sub(leaderNow) - max(rtt, 0), true
}

// settlePromise is a promote order's settle deadline: After, the window
// from its sending (Promote.settle_after_ms; 0: none), or, from an older
// coordinator that sends no window, By, the leader's absolute settle_by
// (zero: none).
type settlePromise struct {
	By    time.Time
	After time.Duration
}

func (p settlePromise) none() bool { return p.After <= 0 && p.By.IsZero() }

// settleGiveUp is the give-up time of a promotion ordered with settle
// (Deps.Guard), checked right before pg_promote (cur: the leader's
// answer then). With a window it counts from a time no later than the
// order's sending, on the agent's monotonic clock: the earlier of its
// receipt less the transit time the leader's clock bounds
// (timing.sentBefore) and the Epoch call's start less the time the leader
// had already waited for it on its own monotonic clock (budget - left);
// the leader's wall clock does not count. The same window is also counted
// on the agent's wall clock from that time's wall reading, and on
// CLOCK_BOOTTIME from now, and the earliest counts: a VM paused meanwhile
// (its monotonic clock stood still) gives up no later than the leader
// expects; a wall clock stepped back changes nothing. Without either
// bound the window cannot be kept: an error. Without a window (an older
// coordinator) settle_by, less the safety margin, is taken on the agent's
// wall clock as before, and counted from now on the other clocks.
func (x *Promoter) settleGiveUp(epoch uint64, timing orderTiming, cur orderCurrent, settle settlePromise) (watchdog.GiveUpTime, error) {
	margin := x.SafetyMargin()
	c := x.Guard.ReadClocks()
	if settle.After <= 0 {
		left := settle.By.Add(-margin).Sub(c.Wall)
		if left <= 0 {
			return watchdog.GiveUpTime{}, fmt.Errorf("%w: promote at epoch %d: its settle deadline %s (less the safety margin) has passed",
				ErrOrderExpired, epoch, settle.By.Format(time.RFC3339Nano))
		}
		return watchdog.GiveUpAfter(c, left, left), nil
	}
	var sent time.Time
	if at, ok := timing.sentBefore(); ok {
		sent = at
	}
	if cur.ans.waiting && timing.HasBudget && !cur.ans.sent.IsZero() {
		if at := cur.ans.sent.Add(-(timing.Budget - cur.ans.left)); sent.IsZero() || at.Before(sent) {
			sent = at
		}
	}
	if sent.IsZero() {
		return watchdog.GiveUpTime{}, fmt.Errorf("refusing to promote at epoch %d: the order's settle window (%s) cannot be counted: neither its transit time nor the leader's wait for it is known (a coordinator that sends neither its clock nor the wait)",
			epoch, settle.After)
	}
	// On the monotonic clock from the sending; on the wall clock from the
	// sending's wall reading, so that a pause of the VM since (which the
	// monotonic clock does not count) brings it forward.
	now := x.clock()
	left := sent.Add(settle.After - margin).Sub(now)
	leftWall := sent.Round(0).Add(settle.After - margin).Sub(now.Round(0))
	if left <= 0 || leftWall <= 0 {
		return watchdog.GiveUpTime{}, fmt.Errorf("%w: promote at epoch %d: its settle window %s from its sending, less the safety margin %s, has passed",
			ErrOrderExpired, epoch, settle.After, margin)
	}
	// On the clocks the watcher and the watchdog's heartbeat count with.
	return watchdog.GiveUpAfter(c, left, leftWall), nil
}

// promote promotes the local replica at epoch: never a fenced node, never
// once the order's deadline has passed (on the agent's monotonic clock
// from the receipt, and on the leader's clock read right before
// pg_promote) or the leader records another primary or a newer epoch
// (asked right before pg_promote). pg_promote's wait ends before the
// earlier of both deadlines. With a settle deadline the promotion is
// guarded until a lease is granted to this node (Deps.Guard,
// settleGiveUp).
func (x *Promoter) promote(ctx context.Context, epoch uint64, timing orderTiming, settle settlePromise) (string, error) {
	var giveUp watchdog.GiveUpTime
	if settle.After <= 0 && !settle.By.IsZero() {
		if _, err := x.settleGiveUp(epoch, timing, orderCurrent{}, settle); err != nil {
			return "", err
		}
	}
	fsDone, err := x.Failsafe.BeginPromote() // acknowledged a failsafe ping within lease_ttl?
	if err != nil {
		return "", err
	}
	// A pending promotion acknowledges no failsafe ping until it is over:
	// the watcher releases it then.
	pending := func() {
		x.Watch(ctx, epoch, giveUp, fsDone)
		fsDone = func() {}
	}
	defer func() { fsDone() }()
	pgdata := x.cfg.Postgres.PGData
	if fi, err := health.ReadFenced(pgdata); fi != nil {
		return "", fmt.Errorf("refusing to promote: this node is fenced (%s, epoch %d; marker %s, %v); a fenced node is never promoted, rejoin it first", fi.Reason, fi.Epoch, health.FencedPath(pgdata), err)
	}
	p, err := x.openPromotion(ctx)
	if err != nil {
		return "", err
	}
	defer p.Close()
	inRecovery, err := p.InRecovery(ctx)
	if err != nil {
		return "", err
	}
	if !inRecovery {
		return "", errors.New("refusing to promote: the server is not in recovery (already a primary)")
	}
	localLeft := func() (time.Duration, bool) {
		if timing.Deadline.IsZero() {
			return 0, false
		}
		return timing.Deadline.Sub(x.clock()), true
	}
	if left, ok := localLeft(); ok {
		if _, late := promoteWaitFor(left, true); late {
			return "", fmt.Errorf("%w: promote at epoch %d: %s left before the order's deadline by this agent's clock, too little for pg_promote to answer in time",
				ErrOrderExpired, epoch, left.Round(time.Millisecond))
		}
	}
	cur, err := x.confirmCurrent(ctx, "promote", epoch, timing)
	if err != nil {
		return "", err
	}
	if timing.Sender != "" && settle.After > 0 && (cur.ans.leader != timing.Sender || !cur.ans.waiting) {
		// The settle window counts from the sender's order on the sender's
		// clock; another leader counts it from its own catch-up, which a
		// deposed sender's late order may follow. Only the sender, still
		// waiting for it (its answer passed a barrier in its term), vouches
		// for the order.
		return "", fmt.Errorf("%w: promote order %s at epoch %d: sent by coordinator %s, but the leader answering is %q and does not wait for it (a deposed leader's late order)",
			ErrOrderExpired, timing.ID, epoch, timing.Sender, cur.ans.leader)
	}
	wait := promoteWait
	if cur.hasLocal {
		w, late := promoteWaitFor(cur.local, true)
		if late {
			return "", fmt.Errorf("%w: promote at epoch %d: %s left before the order's deadline by this agent's clock once the leader confirmed the epoch, too little for pg_promote to answer in time",
				ErrOrderExpired, epoch, cur.local.Round(time.Millisecond))
		}
		wait = w
	}
	// The final check is made on the leader's clock: it does not depend on
	// the agent's clock or on how long the order was in transit.
	if cur.hasLeader {
		w, late := promoteWaitFor(cur.leader, true)
		if late {
			return "", fmt.Errorf("%w: promote at epoch %d: %s left %s, too little for pg_promote to answer in time",
				ErrOrderExpired, epoch, cur.leader.Round(time.Millisecond), cur.leaderHow(timing))
		}
		wait = min(wait, w)
	}
	if !settle.none() {
		if giveUp, err = x.settleGiveUp(epoch, timing, cur, settle); err != nil {
			return "", err
		}
		if err := x.Guard.Guard(epoch, giveUp); err != nil {
			return "", err
		}
	}
	done, err := p.Promote(ctx, wait)
	if err != nil {
		// The request may have reached PostgreSQL: its outcome is unknown.
		pending()
		return "", fmt.Errorf("%w: pg_promote at epoch %d failed (%v) and may still have been requested; PostgreSQL completes a requested promotion once replay catches up", ErrPromotionPending, epoch, err)
	}
	if !done {
		pending()
		return "", fmt.Errorf("%w: pg_promote at epoch %d did not finish within %s; PostgreSQL completes it once replay catches up (unless this node is fenced)", ErrPromotionPending, epoch, wait)
	}
	if err := waitCond(ctx, promoteWait, "the end of recovery", func(ctx context.Context) (bool, error) {
		in, err := p.InRecovery(ctx)
		return err == nil && !in, err
	}); err != nil {
		pending()
		return "", fmt.Errorf("%w: %v", ErrPromotionPending, err)
	}
	out, err := p.Finish(ctx)
	if err != nil {
		// Promoted, but its timeline and LSN are unknown: reported as
		// pending, so that the leader keeps the promotion unsettled (a
		// plain failure reads as an order that never reached PostgreSQL).
		// The watcher sees it completed and asks the leader (guarded:
		// until a lease is granted or the give-up time).
		pending()
		return "", fmt.Errorf("%w: pg_promote at epoch %d completed (recovery ended), but reading the new timeline and LSN failed: %v", ErrPromotionPending, epoch, err)
	}
	if !giveUp.IsZero() {
		// Promoted: guarded until a lease is granted (or the give-up time).
		x.Watch(ctx, epoch, giveUp, func() {})
	}
	x.monitor.CheckNow(ctx)
	return out, nil
}

// orderCurrent is what confirmCurrent found: the time left before the
// order's deadline on the agent's monotonic clock (hasLocal) and on the
// leader's clock as it answered (hasLeader: a deadline, and a coordinator
// that sends its clock), and the answer itself.
type orderCurrent struct {
	local, leader       time.Duration
	hasLocal, hasLeader bool
	ans                 epochAnswer
}

// confirmCurrent is the last check before an order makes this node
// writable (pg_promote, or a restart that starts a former primary's
// PostgreSQL): the leader must still record this node as the primary at
// epoch (confirmEpoch), the leader that sent the order, if it is the one
// answering, must still wait for it, and the caller weighs the time left
// it returns, on both clocks, against what it is about to do. The leader's clock is
// read in the same answer, so neither the agent's clock nor the order's
// transit time counts there.
func (x *base) confirmCurrent(ctx context.Context, what string, epoch uint64, timing orderTiming) (orderCurrent, error) {
	var cur orderCurrent
	ans, err := x.confirmEpoch(ctx, what, epoch, timing.ID)
	if err != nil {
		return cur, err
	}
	cur.ans = ans
	if timing.Sender != "" && ans.leader == timing.Sender && !ans.waiting {
		return cur, fmt.Errorf("%w: %s order %s at epoch %d: the coordinator leader %s that sent it no longer waits for it",
			ErrOrderExpired, what, timing.ID, epoch, ans.leader)
	}
	if !timing.Deadline.IsZero() {
		cur.local, cur.hasLocal = timing.Deadline.Sub(x.clock()), true
	}
	if ans.waiting {
		// On the leader's monotonic clock: no step of its wall clock
		// counts. The leader measured it within the call.
		cur.leader, cur.hasLeader = ans.left-max(ans.rtt, 0), true
		return cur, nil
	}
	cur.leader, cur.hasLeader = leaderLeft(timing.Leader, ans.leaderNow, ans.rtt)
	return cur, nil
}

// leaderHow says how orderCurrent.leader was measured, for errors.
func (cur orderCurrent) leaderHow(timing orderTiming) string {
	if cur.ans.waiting {
		return fmt.Sprintf("before the order's deadline by the coordinator leader's monotonic clock (%s left as it answered, in %s)",
			cur.ans.left.Round(time.Millisecond), cur.ans.rtt.Round(time.Millisecond))
	}
	return fmt.Sprintf("before the order's deadline %s by the coordinator leader's clock (read %s, answered in %s)",
		timing.Leader.Format(time.RFC3339Nano), cur.ans.leaderNow.Format(time.RFC3339Nano), cur.ans.rtt.Round(time.Millisecond))
}

// ErrSuperseded: the leader records another primary or a newer epoch
// than an order's that would make this node writable.
var ErrSuperseded = errors.New("the order's epoch is superseded")

// epochAnswer is what confirmEpoch learnt of the leader's clock: its
// reading (zero from an older coordinator) and how long the call took on
// the agent's monotonic clock.
type epochAnswer struct {
	leaderNow time.Time
	// sent is the call's start on the agent's clock (Deps.Clock).
	sent time.Time
	rtt  time.Duration
	// waiting: the leader still waits for the order asked about, left
	// more on its monotonic clock.
	waiting bool
	left    time.Duration
	// leader is the answering leader's name ("": an older coordinator).
	leader string
}

// confirmEpoch asks the leader whether it still records this node as the
// primary at epoch, before what (promote, restart) makes it writable. An
// order superseded while it waited (behind a long order, or given up by
// its leader, which then chose another candidate at a higher epoch) is
// refused, and the leader's epoch is taken.
func (x *base) confirmEpoch(ctx context.Context, what string, epoch uint64, id string) (epochAnswer, error) {
	var ans epochAnswer
	resp, sent, back, err := x.askEpoch(ctx, id)
	if err != nil {
		return ans, fmt.Errorf("refusing to %s at epoch %d: the coordinator leader did not confirm the epoch: %w", what, epoch, err)
	}
	ans.sent, ans.rtt = sent, back.Sub(sent)
	if n := resp.GetNow(); n != nil {
		ans.leaderNow = n.AsTime()
	}
	if resp.GetCommandWaiting() {
		ans.waiting, ans.left = true, time.Duration(resp.GetCommandLeftMs())*time.Millisecond
	}
	ans.leader = resp.GetLeader()
	x.epoch.See(resp.GetEpoch())
	if resp.GetEpoch() != epoch || resp.GetPrimary() != x.cfg.Node.Name {
		return ans, fmt.Errorf("refusing to %s: %w: the order is of epoch %d and the coordinator leader records %q as primary at epoch %d", what, ErrSuperseded, epoch, resp.GetPrimary(), resp.GetEpoch())
	}
	return ans, nil
}

// askEpoch is the Epoch call to the leader of the current session (about
// order id, if any), with the agent's clock before and after it; the
// leader's clock in the answer is recorded (leaderclock.Clock.Note).
func (x *base) askEpoch(ctx context.Context, id string) (resp *pgdrv1.EpochResponse, sent, back time.Time, err error) {
	var cli EpochClient
	if x.Session != nil {
		cli = x.Session()
	}
	if cli == nil {
		return nil, sent, back, errors.New("no session with the coordinator leader")
	}
	rctx, cancel := context.WithTimeout(ctx, x.RPCTimeout)
	defer cancel()
	sent = x.clock()
	resp, err = cli.Epoch(rctx, &pgdrv1.EpochRequest{Cluster: x.cfg.Cluster, Node: x.cfg.Node.Name, CommandId: id})
	back = x.clock()
	if err != nil {
		return nil, sent, back, err
	}
	if n := resp.GetNow(); n != nil {
		x.lclock.Note(sent, back, n.AsTime(), "epoch query")
	}
	return resp, sent, back, nil
}

// Watch watches a pending promotion of epoch until it completes
// or cannot any more (one watcher at a time), then calls done. When a newer epoch appears
// while it is pending, or it completes, the leader is asked who is
// primary: if another member is, this node is fenced at once rather than
// left writable until its lease loop's refused renewal. With a give-up
// time (giveUp, not zero: the order's settle deadline less the safety
// margin) the promotion stays guarded after it completed, until a lease
// is granted to this node; at giveUp a node without a granted lease is
// fenced, whether the promotion completed or not (Deps.Guard).
func (x *Promoter) Watch(ctx context.Context, epoch uint64, giveUp watchdog.GiveUpTime, done func()) {
	x.mu.Lock()
	if !giveUp.IsZero() && (x.giveUp.IsZero() || giveUp.After(x.giveUp)) {
		x.giveUp = giveUp // the running watcher keeps the latest guard
	}
	if x.watching {
		x.mu.Unlock()
		return // that watcher's done ends the failsafe hold for both
	}
	x.watching = true
	x.mu.Unlock()
	log := x.log.With("component", "promote", "epoch", epoch)
	var guarded bool
	// refresh reads the give-up time, which a later guarded order may move.
	refresh := func() {
		x.mu.Lock()
		giveUp = x.giveUp
		x.mu.Unlock()
		guarded = !giveUp.IsZero()
	}
	refresh()
	go func() {
		defer func() {
			x.mu.Lock()
			x.watching = false
			again := !x.giveUp.IsZero() && ctx.Err() == nil // a guarded order came in meanwhile
			x.mu.Unlock()
			done()
			if again {
				x.Watch(ctx, x.epoch.Current(), watchdog.GiveUpTime{}, func() {})
			}
		}()
		// settled ends the guard: the node cannot become writable without
		// a lease any more (fenced, stopped, or granted).
		settled := func() {
			x.mu.Lock()
			x.giveUp = watchdog.GiveUpTime{}
			x.mu.Unlock()
			if guarded {
				x.Guard.Unguard()
			}
		}
		superseded := func(why string) bool {
			_, err := x.confirmEpoch(ctx, "promote", epoch, "")
			if !errors.Is(err, ErrSuperseded) {
				return false // still current, or the leader cannot say: the lease loop decides
			}
			if x.Fence(ctx, fmt.Sprintf("a promotion ordered at epoch %d %s, and the coordinators moved on: %v", epoch, why, err)) == nil {
				settled()
			}
			return true
		}
		granted := x.Granted
		known, completed := epoch, false
		for {
			select {
			case <-ctx.Done():
				return // the guard stays on disk and in the watchdog for the next agent
			case <-time.After(promoteWatchInterval):
			}
			refresh()
			if fi, _ := health.ReadFenced(x.cfg.Postgres.PGData); fi != nil && !pgctl.PostmasterRunning(x.cfg.Postgres.PGData) {
				log.Info("pending promotion: the node is fenced and stopped; it cannot complete")
				settled()
				return
			} else if fi != nil && !guarded {
				log.Info("pending promotion: the node is fenced; it cannot complete")
				return
			}
			if e := x.epoch.Current(); e > known {
				known = e
				if superseded("was still pending") {
					return
				}
			}
			if guarded && completed && granted() {
				log.Info("the promoted node holds a lease granted as primary: its promotion is settled")
				settled()
				return
			}
			if guarded && giveUp.Passed(x.Guard.ReadClocks()) {
				if granted() {
					settled()
					return
				}
				what := "did not complete"
				if completed {
					what = "completed, but no lease was granted"
				}
				if x.Fence(ctx, fmt.Sprintf("a promotion ordered at epoch %d %s by its settle deadline (less the safety margin, %s): the coordinators may count it as settled and promote another member",
					epoch, what, giveUp)) == nil {
					settled()
				}
				return // a failed fence leaves the guard to the watchdog
			}
			if completed {
				continue
			}
			p, err := x.openPromotion(ctx)
			if err != nil {
				if !pgctl.PostmasterRunning(x.cfg.Postgres.PGData) {
					// A restarted server drops the promote signal file.
					log.Warn("pending promotion: PostgreSQL stopped; the promotion will not complete")
					settled()
					return
				}
				continue
			}
			in, err := p.InRecovery(ctx)
			p.Close()
			if err != nil || in {
				continue
			}
			log.Warn("the pending promotion completed")
			if superseded("completed late") {
				return
			}
			x.monitor.CheckNow(ctx)
			if !guarded {
				return
			}
			completed = true // guarded until a lease is granted
		}
	}()
}
