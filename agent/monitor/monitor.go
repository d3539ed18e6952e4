package monitor

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Interval is health.interval as configured (1s when the configuration
// was not loaded through config.Parse: zero or less).
func Interval(configured time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return time.Second
}

// CheckTimeout bounds one round of checks every interval: long enough for
// a loaded server, short enough that a hung one is noticed within a few
// intervals.
func CheckTimeout(interval time.Duration) time.Duration {
	return min(max(2*interval, 2*time.Second), 10*time.Second)
}

// StaleAfter is the age past which the latest report no longer speaks for
// the server (the checks themselves hang or stopped).
func StaleAfter(interval time.Duration) time.Duration {
	return CheckTimeout(interval) + 3*interval
}

// Checker runs one round of the local checks (agent/health.Checker).
type Checker interface {
	Check(ctx context.Context) *pgdrv1.HealthReport
}

// Deps is what the monitor needs from the rest of the agent.
type Deps struct {
	// Checker runs the checks.
	Checker Checker
	// Clock is the clock that stamps received commands (Received); the
	// checks begin after its reading, with its monotonic reading.
	Clock func() time.Time
	// Annotate adds what the failsafe knows to a fresh report; nil: none.
	Annotate func(*pgdrv1.HealthReport)
	// Published is called with every report that becomes the latest, in
	// report order, under the monitor's lock: it must not block and must
	// not call back into the monitor (the role-change hook's Observe);
	// nil: none.
	Published func(*pgdrv1.HealthReport)
	// CheckDuration observes how long a round took, in seconds; nil: none.
	CheckDuration func(seconds float64)
	Log           *slog.Logger
}

// Monitor is the local health loop: a round of checks every interval, the
// latest report, and the commands reports echo.
type Monitor struct {
	interval time.Duration
	deps     Deps

	mu     sync.Mutex
	latest *pgdrv1.HealthReport
	// begun counts the rounds begun; latestRound is the number of the
	// round whose report is latest. Rounds are ordered by when they began,
	// never by the wall time in their reports: after the wall clock steps
	// back, a newer round's report carries an earlier time.
	begun, latestRound uint64
	// latestAt is when the latest report's round began, on Deps.Clock
	// (with its monotonic reading): a report's age is counted from it,
	// never from the wall time in the report, which a wall clock stepped
	// back would make look fresh.
	latestAt time.Time
	// reported is signalled (without blocking) after every round of checks.
	reported chan struct{}
	// echo: the commands received last, which reports name (echo.go).
	echo commandEcho
}

// New builds a monitor running its checks every interval (Interval).
func New(interval time.Duration, deps Deps) *Monitor {
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{interval: Interval(interval), deps: deps, reported: make(chan struct{}, 1)}
}

// Latest returns the most recent report, or nil before the first round.
// The report must not be modified.
func (m *Monitor) Latest() *pgdrv1.HealthReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest
}

// LatestAge returns the most recent report (nil before the first round)
// and how long ago its round began, on Deps.Clock's monotonic reading.
// The report must not be modified.
func (m *Monitor) LatestAge() (*pgdrv1.HealthReport, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.latest == nil {
		return nil, 0
	}
	return m.latest, m.deps.Clock().Sub(m.latestAt)
}

// SetLatest makes r the latest report, without a round of checks and
// without anything a round publishes (tests). Its age is counted from
// r.Time as read on the wall clock now.
func (m *Monitor) SetLatest(r *pgdrv1.HealthReport) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.deps.Clock()
	m.latest, m.latestAt = r, now
	if r.GetTime() != nil {
		m.latestAt = now.Add(-now.Round(0).Sub(r.GetTime().AsTime()))
	}
	// Rounds begun before it do not replace it; rounds begun after do.
	m.latestRound = m.begun
}

// Reported is signalled (without blocking, one pending signal at most)
// after every round of checks.
func (m *Monitor) Reported() <-chan struct{} { return m.reported }

// Received notes that the command id arrived at at, on Deps.Clock
// (stamped on its arrival on the stream, not when it is carried out):
// the reports whose checks begin after it name it.
func (m *Monitor) Received(id string, at time.Time) { m.echo.received(id, at) }

// CheckNow runs one round of checks at once, publishes the report (to the
// probes, the metrics and the coordinator) and returns it.
func (m *Monitor) CheckNow(ctx context.Context) *pgdrv1.HealthReport {
	start := time.Now()
	m.mu.Lock()
	m.begun++
	round := m.begun
	// The checks begin after sampled, on the clock that stamps received
	// commands: the report names the latest command received by then, and
	// its age is counted from it (LatestAge).
	sampled := m.deps.Clock()
	m.mu.Unlock()
	r := m.deps.Checker.Check(ctx)
	r.AfterCommandId = m.echo.before(sampled)
	if m.deps.Annotate != nil {
		m.deps.Annotate(r)
	}
	if m.deps.CheckDuration != nil {
		m.deps.CheckDuration(time.Since(start).Seconds())
	}
	m.mu.Lock()
	prev := m.latest
	// Rounds may overlap (check_now during the loop's round): keep the one
	// begun last (by number, not by r.Time: see begun).
	if prev == nil || round > m.latestRound {
		m.latest, m.latestRound, m.latestAt = r, round, sampled
		// Under m.mu, so that roles reach the hook in report order;
		// Observe never blocks.
		if m.deps.Published != nil {
			m.deps.Published(r)
		}
	}
	m.mu.Unlock()
	select {
	case m.reported <- struct{}{}:
	default:
	}
	m.logTransition(prev, r)
	return r
}

// logTransition logs when the server's role or health changes, not every
// round.
func (m *Monitor) logTransition(prev, r *pgdrv1.HealthReport) {
	role, healthy := health.Role(r), health.Healthy(r)
	if prev != nil && health.Role(prev) == role && health.Healthy(prev) == healthy && (prev.Error == "") == (r.Error == "") {
		return
	}
	if healthy && r.Error == "" {
		m.deps.Log.Info("health", "role", role, "healthy", true, "timeline", r.Timeline)
		return
	}
	m.deps.Log.Warn("health", "role", role, "healthy", healthy, "error", r.Error)
}

// Run runs the checks every interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
