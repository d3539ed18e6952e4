package orders

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/health"
)

// syncWait bounds how long setSynchronous waits for the reload to show.
const syncWait = 15 * time.Second

// setSynchronous carries out a set_synchronous order: it writes
// synchronous_standby_names with ALTER SYSTEM, reloads, and returns once
// SHOW gives the new value (the server then waits for the named standbys
// before it acknowledges a commit). With lease-gated commits the value
// goes to pgdr.synchronous_standby_names and PostgreSQL's own setting
// names the commit gate alone, which then waits for the named standbys
// itself (agent/commitgate).
//
// The order's epoch was checked by Order (never older than the highest
// epoch this agent saw). It is accepted on the primary and, so that a
// promoted standby acknowledges no commit before its synchronous standbys
// are set, on a standby the coordinator is about to promote: there the
// setting is inert until the promotion. A fenced node refuses it: it must
// rejoin first.
//
// The setting is applied before the order's deadline or not at all: once
// the leader stops waiting, its planner may narrow the recorded standbys
// from the primary's reports, which would not show a setting applied
// later. So connecting and the ALTER SYSTEM are bounded by the deadline
// (a slow connection cannot carry the order past it). Left: a deadline
// that falls between the ALTER SYSTEM and the reload leaves the setting
// written but not loaded (until the next reload, when the planner sees it
// reported and records its standbys first).
func (x *Executor) setSynchronous(ctx context.Context, epoch uint64, value string, timing orderTiming) (string, error) {
	pgdata := x.cfg.Postgres.PGData
	if fi, _ := health.ReadFenced(pgdata); fi != nil {
		return "", fmt.Errorf("refusing to set synchronous_standby_names: this node is fenced (%s, epoch %d)", fi.Reason, fi.Epoch)
	}
	if strings.ContainsAny(value, "\x00\n\r") {
		return "", fmt.Errorf("refusing synchronous_standby_names %q: control characters", value)
	}
	actx := ctx
	if !timing.Deadline.IsZero() {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, timing.Deadline.Sub(x.clock()))
		defer cancel()
	}
	expired := func(err error) error {
		if actx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("%w: set_synchronous at epoch %d: synchronous_standby_names not set before the order's deadline (%v); the leader no longer waits for it", ErrOrderExpired, epoch, err)
		}
		return nil
	}
	conn, inRecovery, err := x.pg.ConnRecovery(actx)
	if err != nil {
		if e := expired(err); e != nil {
			return "", e
		}
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// With lease-gated commits PostgreSQL's own setting names the commit
	// gate alone and value goes to commitgate.RequestedGUC, which the
	// gate enforces and the report shows (agent/commitgate); without,
	// value is PostgreSQL's setting (and a gate's setting left from
	// before is put away).
	gate := x.cfg.Failover.LeaseGatedCommits.On()
	if err := commitgate.Apply(actx, conn, value, commitgate.DefaultAppName, gate); err != nil {
		if e := expired(err); e != nil {
			return "", e
		}
		return "", err
	}
	if err := waitCond(ctx, syncWait, "synchronous_standby_names reloaded", func(ctx context.Context) (bool, error) {
		got, gated, err := commitgate.Requested(ctx, conn, commitgate.DefaultAppName)
		if err != nil {
			return false, err
		}
		return got == value && gated == gate, fmt.Errorf("synchronous_standby_names gives %q (gated %v), want %q (gated %v)", got, gated, value, gate)
	}); err != nil {
		return "", err
	}
	if gate && x.GateRefresh != nil {
		// The gate caches the value between commits: the order is done
		// only once the gate enforces it, as PostgreSQL's own setting is
		// in force once SHOW gives it.
		if err := x.GateRefresh(ctx); err != nil {
			return "", err
		}
	}
	x.log.Info("synchronous_standby_names set", "value", value, "lease_gated", gate, "epoch", epoch, "in_recovery", inRecovery)
	x.monitor.CheckNow(ctx)
	where := "primary"
	if inRecovery {
		where = "standby: in force once promoted"
	}
	return fmt.Sprintf("synchronous_standby_names = %s (%s, epoch %d)", quoteLiteral(value), where, epoch), nil
}
