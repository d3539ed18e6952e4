package watchdog

import "time"

// Clocks is one reading of the clocks a guarded promotion's give-up time
// is judged on (guard.go): Now, time.Now, whose monotonic reading
// counts; Wall, the wall clock alone (no monotonic reading); Boot,
// CLOCK_BOOTTIME in ns (0: it cannot be read). CLOCK_MONOTONIC stands
// still while the host is suspended or the VM paused; CLOCK_BOOTTIME
// counts a suspension, and the wall clock is set right once the guest
// resumes (kvmclock, NTP).
type Clocks struct {
	Now  time.Time
	Wall time.Time
	Boot int64
}

// ReadClocks reads the clocks now.
func ReadClocks() Clocks {
	now := time.Now()
	boot, _ := BootNow()
	return Clocks{Now: now, Wall: now.Round(0), Boot: boot}
}

// GiveUpTime is a guarded promotion's give-up time G on each clock that
// counts: it has passed once any of them reaches it (guard.go). A clock
// that jumps forward therefore makes it pass early, the safe direction
// (the node is fenced early); one that jumps backward changes nothing,
// since the monotonic time still applies. The zero value is no guard.
type GiveUpTime struct {
	// mono is on time.Now's monotonic clock (a reading that carries one).
	mono time.Time
	// wall is on the wall clock alone (zero: none).
	wall time.Time
	// boot is on CLOCK_BOOTTIME, ns (0: none).
	boot int64
}

// GiveUpAfter is the give-up time left after c on the monotonic clock
// and on CLOCK_BOOTTIME, and leftWall after c on the wall clock.
func GiveUpAfter(c Clocks, left, leftWall time.Duration) GiveUpTime {
	g := GiveUpTime{mono: c.Now.Add(left), wall: c.Wall.Add(leftWall)}
	if c.Boot != 0 {
		g.boot = c.Boot + int64(left)
	}
	return g
}

// IsZero reports whether g is no guard.
func (g GiveUpTime) IsZero() bool { return g.mono.IsZero() }

// Left is the time left at c before g: the least on any clock (<= 0:
// passed).
func (g GiveUpTime) Left(c Clocks) time.Duration {
	l := g.mono.Sub(c.Now)
	if !g.wall.IsZero() && !c.Wall.IsZero() {
		l = min(l, g.wall.Sub(c.Wall))
	}
	if g.boot != 0 && c.Boot != 0 {
		l = min(l, time.Duration(g.boot-c.Boot))
	}
	return l
}

// Passed reports whether g has passed at c.
func (g GiveUpTime) Passed(c Clocks) bool { return g.Left(c) <= 0 }

// After orders guards by their monotonic give-up times (a later order's).
func (g GiveUpTime) After(o GiveUpTime) bool { return g.mono.After(o.mono) }

// Equal reports whether g and o are the same guard's.
func (g GiveUpTime) Equal(o GiveUpTime) bool {
	return g.mono.Equal(o.mono) && g.wall.Equal(o.wall) && g.boot == o.boot
}

// String shows g on the wall clock.
func (g GiveUpTime) String() string {
	if g.wall.IsZero() {
		return g.mono.Round(0).Format(time.RFC3339Nano)
	}
	return g.wall.Format(time.RFC3339Nano)
}
