package daemon

import (
	"context"
	"time"

	"github.com/pgdr/pgdr/agent/orders"
	"github.com/pgdr/pgdr/pkg/conninfo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// newOrders builds the executor of the coordinator's orders
// (agent/orders) from the daemon's capabilities. open replaces the local
// server's side of a promotion in tests (nil: a connection to the local
// server).
func (d *Daemon) newOrders(open func(context.Context) (orders.Promotion, error)) *orders.Executor {
	return orders.New(d.cfg, orders.Deps{
		Log:         d.log,
		PG:          d.pg,
		Epoch:       &d.epoch,
		LeaderClock: d.lclock,
		Clock:       d.clock,
		Session: func() orders.EpochClient {
			if cli := d.session(); cli != nil {
				return cli
			}
			return nil
		},
		RPCTimeout:    rpcTimeout,
		SafetyMargin:  d.safetyMargin,
		Monitor:       d,
		Failsafe:      d.failsafe,
		Guard:         ordersGuard{d},
		Granted:       d.leaseGranted,
		Fence:         d.fence,
		Unfence:       d.unfence,
		Reclone:       d.reclone,
		OpenPromotion: open,
	})
}

// The adapters below keep the daemon's callers of the moved code as they
// were (the session, the promotion guard, the re-clone); they go once
// those callers move to packages of their own.

// Order carries out one of the coordinator's orders (orders.Executor.Order)
// in the daemon's run context: orders outlive the session that brought
// them.
func (d *Daemon) Order(cmd *pgdrv1.AgentCommand, received time.Time) (string, error) {
	return d.orders.Order(d.runCtx, cmd, received)
}

// errPromotionPending marks a promotion asked of PostgreSQL that has not
// finished (orders.ErrPromotionPending).
var errPromotionPending = orders.ErrPromotionPending

// orderName is an order's kind as the logs name it (orders.Name).
func orderName(cmd *pgdrv1.AgentCommand) string { return orders.Name(cmd) }

// withoutPassword returns dsn with any password removed
// (conninfo.WithoutPassword).
func withoutPassword(dsn string) string { return conninfo.WithoutPassword(dsn) }

// rejoinWait bounds a re-cloned replica's wait for streaming.
const rejoinWait = orders.RejoinWait

// configFiles are kept across a re-clone (orders.ConfigFiles).
var configFiles = orders.ConfigFiles()

func hostPort(dsn string) (string, uint16, error) { return orders.HostPort(dsn) }

func primaryConninfo(dsn, node string) string { return orders.PrimaryConninfo(dsn, node) }

func (d *Daemon) writeStandbyConfig(epoch uint64, dsn string) error {
	return orders.WriteStandbyConfig(d.cfg, d.pg, epoch, dsn)
}

func (d *Daemon) waitStreaming(ctx context.Context, timeout time.Duration, host string, port uint16) (string, error) {
	return orders.WaitStreaming(ctx, d.pg, timeout, host, port)
}

// watchPromotion watches a pending promotion (orders.Promoter.Watch); the
// promotion guard resumes one a previous agent process left.
func (d *Daemon) watchPromotion(epoch uint64, giveUp giveUpTime, done func()) {
	d.orders.Promoter().Watch(d.runCtx, epoch, ordersGiveUp(d, giveUp), done)
}

// ordersGuard is the promotion guard as the orders use it (orders.Guard).
type ordersGuard struct{ d *Daemon }

func (g ordersGuard) ReadClocks() orders.Reading { return guardReading{d: g.d, c: g.d.readClocks()} }

func (g ordersGuard) Guard(epoch uint64, giveUp orders.GiveUp) error {
	return g.d.guardPromotion(epoch, giveUpTimeOf(giveUp))
}

func (g ordersGuard) Unguard() { g.d.unguardPromotion() }

// guardReading is one reading of the clocks (orders.Reading).
type guardReading struct {
	d *Daemon
	c Clocks
}

func (r guardReading) Wall() time.Time { return r.c.Wall }

func (r guardReading) GiveUpAfter(left, leftWall time.Duration) orders.GiveUp {
	return guardGiveUp{d: r.d, g: giveUpAfter(r.c, left, leftWall)}
}

// guardGiveUp is a give-up time as the orders see it (orders.GiveUp),
// judged on the daemon's clocks.
type guardGiveUp struct {
	d *Daemon
	g giveUpTime
}

func (g guardGiveUp) Passed() bool               { return g.g.passed(g.d.readClocks()) }
func (g guardGiveUp) After(o orders.GiveUp) bool { return g.g.after(giveUpTimeOf(o)) }
func (g guardGiveUp) String() string             { return g.g.String() }

// ordersGiveUp is g as the orders see it (nil: no guard).
func ordersGiveUp(d *Daemon, g giveUpTime) orders.GiveUp {
	if g.isZero() {
		return nil
	}
	return guardGiveUp{d: d, g: g}
}

// giveUpTimeOf is the give-up time behind g (zero: none).
func giveUpTimeOf(g orders.GiveUp) giveUpTime {
	if gg, ok := g.(guardGiveUp); ok {
		return gg.g
	}
	return giveUpTime{}
}
