package leaderclock

import (
	"log/slog"
	"sync"
	"time"
)

// skewWarn is the clock skew (with the transit time) between the leader
// and the agent above which the agent warns: once, then again after
// skewWarnEvery while it lasts (it is measured every leader check).
const (
	skewWarn      = 5 * time.Second
	skewWarnEvery = 10 * time.Minute
)

// Measurement is one measurement of the coordinator leader's clock: its
// reading in the answer to a call (Leader), the agent's clock (with its
// monotonic reading) at the call's midpoint (Local), that clock's wall
// reading alone (LocalWall), and the call's round trip (RTT).
type Measurement struct {
	Local     time.Time
	LocalWall time.Time
	Leader    time.Time
	RTT       time.Duration
}

// Measure is the measurement of the leader's clock, leaderNow, read in the
// answer to a call sent at sent and answered at back on the agent's clock.
func Measure(sent, back, leaderNow time.Time) Measurement {
	rtt := back.Sub(sent)
	mid := sent.Add(rtt / 2)
	return Measurement{Local: mid, LocalWall: mid.Round(0), Leader: leaderNow, RTT: rtt}
}

// Latest is the latest the leader's clock can read when the agent's reads
// at: the leader read its clock within the call, at most RTT/2 after its
// midpoint, and the time since is counted on the agent's monotonic clock,
// or on its wall clock when that counts more: the monotonic clock stands
// still while the machine (or VM) is suspended, the wall clock is set
// right on waking. So a backward step of the agent's wall clock counts
// for nothing, a forward one shortens the budgets of the orders received
// before the next measurement (every leader check): never a longer
// budget. A step of the leader's own wall clock after the measurement is
// not seen until the next one.
func (m Measurement) Latest(at time.Time) time.Time {
	elapsed := at.Sub(m.Local)
	if !m.LocalWall.IsZero() {
		elapsed = max(elapsed, at.Round(0).Sub(m.LocalWall))
	}
	return m.Leader.Add(elapsed + max(m.RTT, 0)/2)
}

// Gauge is where the skew is shown, in seconds
// (pgdr_agent_leader_clock_skew_seconds); a prometheus.Gauge is one.
type Gauge interface {
	Set(float64)
}

// Clock is the agent's knowledge of the leader's clock: the last
// measurement (until forgotten) and the last measured skew.
type Clock struct {
	log  *slog.Logger
	skew Gauge // nil: no metric

	// mu guards the rest.
	mu         sync.Mutex
	skewVal    time.Duration
	skewKnown  bool
	last       Measurement
	lastKnown  bool
	skewWarned time.Time // when a large skew was last logged
}

// New is a clock that knows nothing of the leader's yet; it warns of a
// large skew on log and shows the skew on skew (nil: nowhere).
func New(log *slog.Logger, skew Gauge) *Clock {
	return &Clock{log: log, skew: skew}
}

// NoteSkew records the agent's clock minus the leader's, as last measured
// (from an order's sent_at or a call's answer), for the metrics, and
// warns when it is large. Orders do not depend on it: their deadlines
// count from the receipt on the agent's monotonic clock, less the transit
// time (Note).
func (c *Clock) NoteSkew(skew time.Duration, how string) {
	large := skew > skewWarn || skew < -skewWarn
	c.mu.Lock()
	c.skewVal, c.skewKnown = skew, true
	warn := large && (c.skewWarned.IsZero() || time.Since(c.skewWarned) >= skewWarnEvery)
	switch {
	case warn:
		c.skewWarned = time.Now()
	case !large:
		c.skewWarned = time.Time{}
	}
	c.mu.Unlock()
	if c.skew != nil {
		c.skew.Set(skew.Seconds())
	}
	if warn {
		c.log.Warn("this agent's clock differs from the coordinator leader's (keep both in sync with NTP); order deadlines count from their receipt and do not depend on it",
			"agent_minus_leader", skew.Round(time.Millisecond), "measured", how)
	}
}

// Note records the leader's clock, leaderNow, read in the answer to a call
// sent at sent and answered at back on the agent's clock (the latest
// measurement is kept), and the skew it shows (NoteSkew): orders' transit
// times are measured with it.
func (c *Clock) Note(sent, back, leaderNow time.Time, how string) {
	m := Measure(sent, back, leaderNow)
	c.mu.Lock()
	c.last, c.lastKnown = m, true
	c.mu.Unlock()
	c.NoteSkew(m.Local.Sub(leaderNow), how)
}

// Forget drops the measurement of the leader's clock: a new session may be
// with another leader (measured again when it registers). The skew stays
// as last measured.
func (c *Clock) Forget() {
	c.mu.Lock()
	c.lastKnown = false
	c.mu.Unlock()
}

// Last is a copy of the latest measurement of the leader's clock (nil:
// none yet, or forgotten since).
func (c *Clock) Last() *Measurement {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lastKnown {
		return nil
	}
	m := c.last
	return &m
}

// Skew is the last measured agent clock minus the leader's (ok false: none
// measured yet).
func (c *Clock) Skew() (skew time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.skewVal, c.skewKnown
}
