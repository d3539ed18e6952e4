package leaderclock

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// gauge records the skew the clock sets on the metric.
type gauge struct {
	mu  sync.Mutex
	v   float64
	set int
}

func (g *gauge) Set(v float64) {
	g.mu.Lock()
	g.v, g.set = v, g.set+1
	g.mu.Unlock()
}

func (g *gauge) value() (float64, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.v, g.set
}

// TestMeasure: a call's answer is taken as read at the call's midpoint on
// the agent's clock, with that clock's monotonic reading and its wall
// reading alone.
func TestMeasure(t *testing.T) {
	sent := time.Now()
	back := sent.Add(300 * time.Millisecond)
	leader := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	m := Measure(sent, back, leader)
	mid := sent.Add(150 * time.Millisecond)
	if !m.Local.Equal(mid) || m.Local.Round(0) == m.Local {
		t.Fatalf("Local %v; want %v with its monotonic reading", m.Local, mid)
	}
	if m.LocalWall != mid.Round(0) {
		t.Fatalf("LocalWall %v; want %v without a monotonic reading", m.LocalWall, mid.Round(0))
	}
	if !m.Leader.Equal(leader) || m.RTT != 300*time.Millisecond {
		t.Fatalf("Leader %v, RTT %s; want %v, 300ms", m.Leader, m.RTT, leader)
	}
}

// TestLatest: the latest the leader's clock can read when the agent's
// reads at: the leader's reading, half the round trip, and the time since
// the measurement, the larger of what the agent's monotonic and wall
// clocks say (the monotonic one stands still while a VM is suspended);
// never less than the monotonic clock says.
func TestLatest(t *testing.T) {
	leader := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	base := time.Now() // with its monotonic reading
	for _, c := range []struct {
		name     string
		wallStep time.Duration // the agent's wall clock stepped by this since the measurement
		rtt      time.Duration
		elapsed  time.Duration // on the agent's monotonic clock
		want     time.Duration // after the leader's reading
	}{
		{name: "at the measurement", want: 0},
		{name: "half the round trip", rtt: 200 * time.Millisecond, want: 100 * time.Millisecond},
		{name: "5s later", elapsed: 5 * time.Second, rtt: 10 * time.Millisecond, want: 5005 * time.Millisecond},
		{name: "suspended: the wall clock moved on 100s more", elapsed: 5 * time.Second, wallStep: 100 * time.Second, want: 105 * time.Second},
		{name: "wall clock stepped back: counts for nothing", elapsed: 5 * time.Second, wallStep: -100 * time.Second, want: 5 * time.Second},
		{name: "a negative round trip adds nothing", rtt: -time.Second, want: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := Measurement{Local: base, LocalWall: base.Round(0).Add(-c.wallStep), Leader: leader, RTT: c.rtt}
			if got := m.Latest(base.Add(c.elapsed)).Sub(leader); got != c.want {
				t.Fatalf("Latest is %s after the leader's reading; want %s", got, c.want)
			}
		})
	}
	// Without a wall reading only the monotonic clock counts.
	m := Measurement{Local: base, Leader: leader}
	if got := m.Latest(base.Add(time.Second)).Sub(leader); got != time.Second {
		t.Fatalf("without LocalWall: %s; want 1s", got)
	}
}

// TestClock: a measurement is kept until the next one or until the session
// forgets it; the skew (the agent's clock minus the leader's) is kept and
// set on the metric, from a measurement or from an order's sent_at.
func TestClock(t *testing.T) {
	g := &gauge{}
	c := New(slog.New(slog.DiscardHandler), g)
	if m := c.Last(); m != nil {
		t.Fatalf("a new clock has a measurement: %+v", m)
	}
	if s, ok := c.Skew(); ok || s != 0 {
		t.Fatalf("a new clock knows a skew: %s", s)
	}
	now := time.Now()
	c.Note(now, now.Add(2*time.Millisecond), now.Add(-120*time.Second), "registration with c1")
	m := c.Last()
	if m == nil || !m.Local.Equal(now.Add(time.Millisecond)) || m.RTT != 2*time.Millisecond {
		t.Fatalf("measurement %+v; want the call's midpoint and round trip", m)
	}
	if s, ok := c.Skew(); !ok || s != 120*time.Second+time.Millisecond {
		t.Fatalf("skew %s (known %t); want 120.001s", s, ok)
	}
	if v, n := g.value(); n != 1 || v != (120*time.Second+time.Millisecond).Seconds() {
		t.Fatalf("gauge %g (set %d times); want 120.001 once", v, n)
	}
	m.RTT = time.Hour // a copy: the kept measurement does not change
	if c.Last().RTT != 2*time.Millisecond {
		t.Fatal("Last returned the kept measurement, not a copy")
	}
	c.NoteSkew(-3*time.Second, "order x (with its transit time)")
	if s, _ := c.Skew(); s != -3*time.Second {
		t.Fatalf("skew %s after NoteSkew; want -3s", s)
	}
	if v, n := g.value(); n != 2 || v != -3 {
		t.Fatalf("gauge %g (set %d times); want -3", v, n)
	}
	if c.Last() == nil {
		t.Fatal("NoteSkew dropped the measurement")
	}
	c.Forget()
	if m := c.Last(); m != nil {
		t.Fatalf("a forgotten measurement: %+v", m)
	}
	if _, ok := c.Skew(); !ok {
		t.Fatal("Forget dropped the skew; the metric keeps showing the last one")
	}
	New(slog.New(slog.DiscardHandler), nil).NoteSkew(time.Second, "no metric") // a nil gauge is allowed
}

// TestSkewWarningNotRepeated: the leader's clock is measured every leader
// check (5s); an agent whose clock is off warns once, not at every
// measurement, and again only after skewWarnEvery or once the skew went
// back under skewWarn in between.
func TestSkewWarningNotRepeated(t *testing.T) {
	var buf bytes.Buffer
	c := New(slog.New(slog.NewTextHandler(&buf, nil)), nil)
	warnings := func() int { return strings.Count(buf.String(), "clock differs") }
	now := time.Now()
	for i := 0; i < 5; i++ {
		c.Note(now, now.Add(time.Millisecond), now.Add(-120*time.Second), "leader check")
	}
	if n := warnings(); n != 1 {
		t.Fatalf("%d warnings for 5 measurements of the same 120s skew; want 1", n)
	}
	c.Note(now, now, now, "leader check") // back in sync
	c.Note(now, now, now.Add(-120*time.Second), "leader check")
	if n := warnings(); n != 2 {
		t.Fatalf("%d warnings after the skew came back; want 2", n)
	}
	if !strings.Contains(buf.String(), `msg="this agent's clock differs from the coordinator leader's (keep both in sync with NTP); order deadlines count from their receipt and do not depend on it" agent_minus_leader=2m0.001s measured="leader check"`) {
		t.Fatalf("the warning's text changed:\n%s", buf.String())
	}
}

// TestClockConcurrent: the session's measurements, orders' skews and the
// readers run at once.
func TestClockConcurrent(t *testing.T) {
	c := New(slog.New(slog.DiscardHandler), &gauge{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 500 {
				now := time.Now()
				switch (i + j) % 5 {
				case 0:
					c.Note(now, now.Add(time.Millisecond), now, "leader check")
				case 1:
					c.NoteSkew(time.Duration(j)*time.Millisecond, "order")
				case 2:
					c.Forget()
				case 3:
					if m := c.Last(); m != nil {
						_ = m.Latest(now)
					}
				default:
					c.Skew()
				}
			}
		}()
	}
	wg.Wait()
}
