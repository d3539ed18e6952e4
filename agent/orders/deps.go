package orders

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/pgdr/pgdr/agent/epoch"
	"github.com/pgdr/pgdr/agent/leaderclock"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/agent/watchdog"
	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// EpochClient is the session's client as the orders use it: the Epoch
// call to the coordinator leader.
type EpochClient interface {
	Epoch(ctx context.Context, in *pgdrv1.EpochRequest, opts ...grpc.CallOption) (*pgdrv1.EpochResponse, error)
}

// Monitor is the agent's health monitor: CheckNow runs a round of checks
// at once, so that the next report shows what an order changed.
type Monitor interface {
	CheckNow(ctx context.Context) *pgdrv1.HealthReport
}

// Failsafe is the failsafe's side of a promotion: BeginPromote refuses it
// within an acknowledgement's refusal window, and holds off
// acknowledgements until done is called.
type Failsafe interface {
	BeginPromote() (done func(), err error)
}

// Guard is the promotion guard: it holds a guarded promotion's give-up
// time on disk and in the watchdog (settleGiveUp, Promoter.Watch).
type Guard interface {
	// ReadClocks reads the clocks a give-up time is judged on.
	ReadClocks() watchdog.Clocks
	// Guard guards a promotion of epoch until giveUp; an error means the
	// promise cannot be kept: pg_promote must not be called. A zero
	// giveUp is refused.
	Guard(epoch uint64, giveUp watchdog.GiveUpTime) error
	// Unguard ends the guard (lease granted, fenced, or PostgreSQL
	// stopped).
	Unguard()
}

// Promotion is the local server's side of a promotion; the Promoter opens
// one per order (Deps.OpenPromotion, replaced in tests).
type Promotion interface {
	// InRecovery is pg_is_in_recovery().
	InRecovery(ctx context.Context) (bool, error)
	// Promote is pg_promote(true, wait): true once the promotion finished.
	Promote(ctx context.Context, wait time.Duration) (bool, error)
	// Finish runs after the end of recovery: a checkpoint, then the new
	// timeline and LSN for the order's output.
	Finish(ctx context.Context) (string, error)
	Close()
}

// Deps is what carrying out the orders needs from the rest of the agent.
type Deps struct {
	Log *slog.Logger
	// PG is PostgreSQL's process control.
	PG *pgctl.Controller
	// Epoch is the highest epoch seen; LeaderClock the measurement of the
	// coordinator leader's clock.
	Epoch       *epoch.Tracker
	LeaderClock *leaderclock.Clock
	// Clock is the agent's clock for the orders' deadlines (time.Now, or
	// the tests'); its readings carry Go's monotonic clock.
	Clock func() time.Time
	// Session is the client of the session with the coordinator leader
	// (nil: no session).
	Session func() EpochClient
	// RPCTimeout bounds the Epoch call (0: defaultRPCTimeout).
	RPCTimeout time.Duration
	// SafetyMargin is failover.safety_margin.
	SafetyMargin func() time.Duration
	Monitor      Monitor
	Failsafe     Failsafe
	Guard        Guard
	// Granted reports whether a lease renewal was granted to this node
	// since it became primary.
	Granted func() bool
	// Fence stops PostgreSQL and writes the fenced marker; Unfence clears
	// the fence (rejoin).
	Fence   func(ctx context.Context, reason string) error
	Unfence func() error
	// Reclone makes this node a replica of primary from a fresh copy, when
	// rejoin cannot rewind it (why).
	Reclone func(ctx context.Context, epoch uint64, primary, dsn string, why error) (string, error)
	// OpenPromotion opens the local server's side of a promotion; nil: a
	// connection to the local server (OpenPGPromotion).
	OpenPromotion func(ctx context.Context) (Promotion, error)
	// Divergence makes the divergence report of this node (stopped)
	// before a rejoin rewinds or replaces its data directory, against the
	// new primary at dsn (agent/divergence.Make); nil: no report. It must
	// not fail: what it cannot read it reports as unknown.
	Divergence func(ctx context.Context, epoch uint64, primary, dsn string) *pgdrv1.DivergenceSummary
	// GateRefresh, with lease-gated commits on, returns once the commit
	// gate enforces the synchronous_standby_names just set
	// (commitgate.Gate.Refresh); nil: no gate.
	GateRefresh func(ctx context.Context) error
}

// defaultRPCTimeout bounds the Epoch call when Deps.RPCTimeout is not set
// (the session's own RPC timeout).
const defaultRPCTimeout = 3 * time.Second

// base is what the Executor and the Promoter share: the configuration,
// the dependencies, and the epoch's confirmation with the leader.
type base struct {
	cfg *config.Config
	Deps
	log     *slog.Logger
	pg      *pgctl.Controller
	epoch   *epoch.Tracker
	lclock  *leaderclock.Clock
	monitor Monitor
}

// clock is the agent's clock for the orders' deadlines.
func (x *base) clock() time.Time {
	if x.Clock != nil {
		return x.Clock()
	}
	return time.Now()
}

// Executor carries out the coordinator's orders, one at a time.
type Executor struct {
	*base
	promoter *Promoter
	// mu is held while an order runs: one at a time.
	mu sync.Mutex
	// divMu guards divergence: the divergence reports of rejoin orders
	// by command id, until the session takes them (TakeDivergence).
	divMu      sync.Mutex
	divergence map[string]*pgdrv1.DivergenceSummary
}

// maxHeldDivergence bounds the reports held for the session: one per
// rejoin order, taken as soon as the order returns.
const maxHeldDivergence = 8

// holdDivergence keeps the divergence report of order id for the session.
func (x *Executor) holdDivergence(id string, s *pgdrv1.DivergenceSummary) {
	if s == nil {
		return
	}
	x.divMu.Lock()
	defer x.divMu.Unlock()
	if x.divergence == nil {
		x.divergence = map[string]*pgdrv1.DivergenceSummary{}
	}
	if len(x.divergence) >= maxHeldDivergence {
		clear(x.divergence) // never taken: a session that does not ask
	}
	x.divergence[id] = s
}

// TakeDivergence returns (once) the divergence report the rejoin order id
// made, or nil: the session sends it with the order's result.
func (x *Executor) TakeDivergence(id string) *pgdrv1.DivergenceSummary {
	x.divMu.Lock()
	defer x.divMu.Unlock()
	s := x.divergence[id]
	delete(x.divergence, id)
	return s
}

// New builds the executor of cfg's orders.
func New(cfg *config.Config, deps Deps) *Executor {
	if deps.RPCTimeout <= 0 {
		deps.RPCTimeout = defaultRPCTimeout
	}
	b := &base{cfg: cfg, Deps: deps, log: deps.Log, pg: deps.PG, epoch: deps.Epoch, lclock: deps.LeaderClock, monitor: deps.Monitor}
	return &Executor{base: b, promoter: &Promoter{base: b}}
}

// Promoter is the executor's promoter (for Promoter.Watch).
func (x *Executor) Promoter() *Promoter { return x.promoter }

// Hold waits for the order running now, and keeps the next from starting
// until release is called (as a long order would).
func (x *Executor) Hold() (release func()) {
	x.mu.Lock()
	return x.mu.Unlock
}
