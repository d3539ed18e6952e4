package policy

import (
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/duration"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// GameDay is a DR test plan (docs/gamedays.md): on its schedule, the
// leader runs Runbooks in order within Window while a probe writes
// through the cluster's endpoint and measures the write unavailability
// of each run. The replicated policy holds it, so it is bounded.
type GameDay struct {
	Name     string
	Schedule string
	Timezone string // IANA name; "" = UTC
	Window   time.Duration
	Runbooks []GameDayRunbook
	Probe    GameDayProbe
}

// GameDayRunbook is one runbook of a game day and its parameters.
type GameDayRunbook struct {
	Name   string
	Params map[string]string
}

// GameDayProbe is the probe's connection: a libpq DSN without a password
// (a multi-host one with target_session_attrs=read-write is the cluster's
// endpoint), a password file read on the leader, the write interval.
type GameDayProbe struct {
	DSN          string
	PasswordFile string
	Interval     time.Duration
}

// Game day bounds and defaults.
const (
	MaxGameDays          = 4
	MaxGameDayRunbooks   = 8
	MaxGameDayParams     = 16
	MaxGameDayField      = 1024
	DefaultGameDayWindow = 2 * time.Hour
	MinGameDayWindow     = time.Minute
	MaxGameDayWindow     = 24 * time.Hour
	DefaultProbeInterval = 100 * time.Millisecond
	MinProbeInterval     = 10 * time.Millisecond
	MaxProbeInterval     = 10 * time.Second
)

// NextRun is the first slot of g's schedule after after.
func (g GameDay) NextRun(after time.Time) (time.Time, error) {
	return Tier{Schedule: g.Schedule, Timezone: g.Timezone}.NextRun(after)
}

// GameDayByName returns the named game day.
func (p Policy) GameDayByName(name string) (GameDay, bool) {
	for _, g := range p.GameDays {
		if g.Name == name {
			return g, true
		}
	}
	return GameDay{}, false
}

func normalizeGameDays(gs []GameDay) {
	for i := range gs {
		g := &gs[i]
		g.Schedule = strings.Join(strings.Fields(g.Schedule), " ")
		if tz, rest, ok := cutTZ(g.Schedule); ok && (g.Timezone == "" || g.Timezone == tz) {
			g.Timezone, g.Schedule = tz, rest
		}
		if g.Timezone == "" {
			g.Timezone = DefaultTimezone
		}
		if g.Window == 0 {
			g.Window = DefaultGameDayWindow
		}
		if g.Probe.Interval == 0 {
			g.Probe.Interval = DefaultProbeInterval
		}
	}
}

// validateGameDays reports the game days' problems through bad, each
// naming its field (game_days[0].probe.dsn, ...). A runbook's name is
// checked when the game day runs (the runbooks live apart from the
// policy).
func validateGameDays(gs []GameDay, withSchedule bool, bad func(field, format string, a ...any)) {
	if len(gs) > MaxGameDays {
		bad("game_days", "%d game days, at most %d", len(gs), MaxGameDays)
		return
	}
	for i, g := range gs {
		f := "game_days[" + strconv.Itoa(i) + "]"
		if !validName(g.Name) {
			bad(f+".name", "%q is not a valid name", clip(g.Name))
		}
		for _, o := range gs[:i] {
			if o.Name == g.Name {
				bad(f+".name", "%q is repeated", clip(g.Name))
			}
		}
		if g.Schedule == "" || len(g.Schedule) > MaxScheduleLen {
			bad(f+".schedule", "required, at most %d bytes", MaxScheduleLen)
		} else if withSchedule {
			if _, err := (Tier{Schedule: g.Schedule, Timezone: g.Timezone}).schedule(); err != nil {
				bad(f+".schedule", "%v", err)
			}
		}
		if len(g.Timezone) > MaxTimezoneLen {
			bad(f+".timezone", "at most %d bytes", MaxTimezoneLen)
		}
		if g.Window < MinGameDayWindow || g.Window > MaxGameDayWindow || g.Window%time.Second != 0 {
			bad(f+".window", "%s: want whole seconds from %s to %s", duration.Format(g.Window), duration.Format(MinGameDayWindow), duration.Format(MaxGameDayWindow))
		}
		switch {
		case len(g.Runbooks) == 0:
			bad(f+".runbooks", "required: the runbooks to run, in order")
		case len(g.Runbooks) > MaxGameDayRunbooks:
			bad(f+".runbooks", "%d runbooks, at most %d", len(g.Runbooks), MaxGameDayRunbooks)
		}
		for j, rb := range g.Runbooks {
			rf := f + ".runbooks[" + strconv.Itoa(j) + "]"
			if !validName(rb.Name) {
				bad(rf+".name", "%q is not a valid name", clip(rb.Name))
			}
			if len(rb.Params) > MaxGameDayParams {
				bad(rf+".params", "%d parameters, at most %d", len(rb.Params), MaxGameDayParams)
			}
			for k, v := range rb.Params {
				if k == "" || len(k) > 64 || len(v) > MaxGameDayField {
					bad(rf+".params", "%q: want a key of 1 to 64 bytes and a value of at most %d", clip(k), MaxGameDayField)
				}
			}
		}
		pf := f + ".probe"
		dsn := strings.ToLower(g.Probe.DSN)
		switch {
		case g.Probe.DSN == "" || len(g.Probe.DSN) > MaxGameDayField:
			bad(pf+".dsn", "required (the cluster's endpoint: host=... port=... dbname=... user=...), at most %d bytes", MaxGameDayField)
		case strings.Contains(dsn, "password") || strings.Contains(dsn, "://"):
			bad(pf+".dsn", "must be in key=value form and carry no password (use probe.password_file)")
		}
		if g.Probe.PasswordFile != "" && (!strings.HasPrefix(g.Probe.PasswordFile, "/") || len(g.Probe.PasswordFile) > MaxGameDayField) {
			bad(pf+".password_file", "%q: want an absolute path", clip(g.Probe.PasswordFile))
		}
		if g.Probe.Interval < MinProbeInterval || g.Probe.Interval > MaxProbeInterval {
			bad(pf+".interval", "%s: want %s to %s", g.Probe.Interval, MinProbeInterval, MaxProbeInterval)
		}
	}
}

func gameDaysToProto(gs []GameDay) []*pgdrv1.GameDayPolicy {
	var out []*pgdrv1.GameDayPolicy
	for _, g := range gs {
		gp := &pgdrv1.GameDayPolicy{Name: g.Name, Schedule: g.Schedule, Timezone: g.Timezone, WindowSeconds: seconds(g.Window),
			Probe: &pgdrv1.GameDayProbe{Dsn: g.Probe.DSN, PasswordFile: g.Probe.PasswordFile, IntervalMs: g.Probe.Interval.Milliseconds()}}
		gp.Runbooks = GameDayRunbooksProto(g.Runbooks)
		out = append(out, gp)
	}
	return out
}

// GameDayRunbooksProto are runbooks as the replicated state holds them.
func GameDayRunbooksProto(rbs []GameDayRunbook) []*pgdrv1.GameDayRunbook {
	var out []*pgdrv1.GameDayRunbook
	for _, rb := range rbs {
		out = append(out, &pgdrv1.GameDayRunbook{Name: rb.Name, Params: maps.Clone(rb.Params)})
	}
	return out
}

func gameDaysFromProto(gps []*pgdrv1.GameDayPolicy) []GameDay {
	var out []GameDay
	for _, gp := range gps {
		g := GameDay{Name: gp.GetName(), Schedule: gp.GetSchedule(), Timezone: gp.GetTimezone(), Window: fromSeconds(gp.GetWindowSeconds()),
			Probe: GameDayProbe{DSN: gp.GetProbe().GetDsn(), PasswordFile: gp.GetProbe().GetPasswordFile(),
				Interval: time.Duration(gp.GetProbe().GetIntervalMs()) * time.Millisecond}}
		for _, rb := range gp.GetRunbooks() {
			g.Runbooks = append(g.Runbooks, GameDayRunbook{Name: rb.GetName(), Params: maps.Clone(rb.GetParams())})
		}
		out = append(out, g)
	}
	return out
}

// FileGameDay is one game day of a policy File.
type FileGameDay struct {
	Name     string               `yaml:"name" json:"name"`
	Schedule string               `yaml:"schedule" json:"schedule"`
	Timezone string               `yaml:"timezone,omitempty" json:"timezone"`
	Window   string               `yaml:"window,omitempty" json:"window"`
	Runbooks []FileGameDayRunbook `yaml:"runbooks" json:"runbooks"`
	Probe    FileGameDayProbe     `yaml:"probe" json:"probe"`
}

// FileGameDayRunbook is one runbook of a FileGameDay.
type FileGameDayRunbook struct {
	Name   string            `yaml:"name" json:"name"`
	Params map[string]string `yaml:"params,omitempty" json:"params"`
}

// FileGameDayProbe is the probe of a FileGameDay.
type FileGameDayProbe struct {
	DSN          string `yaml:"dsn" json:"dsn"`
	PasswordFile string `yaml:"password_file,omitempty" json:"password_file"`
	Interval     string `yaml:"interval,omitempty" json:"interval"`
}

func gameDaysFromFile(fs []FileGameDay, dur func(field, s string, def time.Duration) time.Duration) []GameDay {
	var out []GameDay
	for i, fg := range fs {
		f := "game_days[" + strconv.Itoa(i) + "]"
		g := GameDay{Name: fg.Name, Schedule: fg.Schedule, Timezone: fg.Timezone, Window: dur(f+".window", fg.Window, 0),
			Probe: GameDayProbe{DSN: fg.Probe.DSN, PasswordFile: fg.Probe.PasswordFile, Interval: dur(f+".probe.interval", fg.Probe.Interval, 0)}}
		for _, rb := range fg.Runbooks {
			g.Runbooks = append(g.Runbooks, GameDayRunbook{Name: rb.Name, Params: maps.Clone(rb.Params)})
		}
		out = append(out, g)
	}
	return out
}

func gameDaysToFile(gs []GameDay) []FileGameDay {
	var out []FileGameDay
	for _, g := range gs {
		fg := FileGameDay{Name: g.Name, Schedule: g.Schedule, Timezone: g.Timezone, Window: duration.Format(g.Window),
			Probe: FileGameDayProbe{DSN: g.Probe.DSN, PasswordFile: g.Probe.PasswordFile}}
		if g.Probe.Interval != 0 {
			fg.Probe.Interval = g.Probe.Interval.String()
		}
		for _, rb := range g.Runbooks {
			fg.Runbooks = append(fg.Runbooks, FileGameDayRunbook{Name: rb.Name, Params: maps.Clone(rb.Params)})
		}
		out = append(out, fg)
	}
	return out
}
