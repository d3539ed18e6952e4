package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/duration"
)

// valid is a small policy that passes; each case below breaks one thing.
func valid() Policy {
	p := Policy{
		PITRWindow: 7 * Day,
		Tiers: []Tier{
			{Name: "full", Type: TypeFull, Schedule: "0 2 * * 0", KeepCount: 4},
			{Name: "diff", Type: TypeDiff, Schedule: "0 2 * * 1-6", KeepAge: 8 * Day},
			{Name: "incr", Type: TypeIncr, Schedule: "0 */4 * * *", KeepAge: 2 * Day, Repos: []string{"local", "s3-eu"}},
		},
	}
	p.Normalize()
	return p
}

func TestDefaultIsValid(t *testing.T) {
	d := Default()
	if err := d.Validate(Options{}); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	want := map[string]struct {
		typ string
		age time.Duration
	}{"hourly": {TypeIncr, 7 * Day}, "daily": {TypeFull, 30 * Day}, "weekly": {TypeFull, 12 * 7 * Day}, "monthly": {TypeFull, 7 * duration.Year}}
	if len(d.Tiers) != len(want) || d.PITRWindow != 7*Day {
		t.Fatalf("defaults: %+v", d)
	}
	for _, tr := range d.Tiers {
		if w := want[tr.Name]; tr.Type != w.typ || tr.KeepAge != w.age || tr.RunOn != RunOnPreferStandby || tr.Timezone != "UTC" {
			t.Errorf("default tier %+v, want type %s keep_age %s", tr, w.typ, w.age)
		}
	}
	n := Default()
	n.Normalize()
	if err := n.Validate(Options{}); err != nil {
		t.Fatal(err)
	}
}

// TestValidate: each case is one mistake an operator makes, and the error
// must name the field.
func TestValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(p *Policy)
		opts  Options
		field string // "" = valid
		text  string
	}{
		{name: "valid", edit: func(*Policy) {}},
		{name: "6-field schedule with seconds", edit: func(p *Policy) { p.Tiers[2].Schedule = "30 0 */4 * * *" }},
		{name: "descriptor", edit: func(p *Policy) { p.Tiers[0].Schedule = "@weekly" }},
		{name: "CRON_TZ prefix moved to timezone", edit: func(p *Policy) {
			p.Tiers[0].Schedule, p.Tiers[0].Timezone = "CRON_TZ=Europe/Berlin 0 2 * * 0", ""
			p.Normalize()
			if p.Tiers[0].Timezone != "Europe/Berlin" || p.Tiers[0].Schedule != "0 2 * * 0" {
				panic("not normalized: " + p.Tiers[0].Timezone + " / " + p.Tiers[0].Schedule)
			}
		}},
		{name: "bad cron", edit: func(p *Policy) { p.Tiers[1].Schedule = "0 25 * * *" }, field: "tiers[1].schedule", text: "end of range"},
		{name: "too many cron fields", edit: func(p *Policy) { p.Tiers[1].Schedule = "0 0 2 * * * *" }, field: "tiers[1].schedule", text: "expected 5 to 6 fields"},
		{name: "empty schedule", edit: func(p *Policy) { p.Tiers[0].Schedule = "" }, field: "tiers[0].schedule", text: "required"},
		{name: "never runs", edit: func(p *Policy) { p.Tiers[0].Schedule = "0 0 31 2 *" }, field: "tiers[0].schedule", text: "never runs"},
		{name: "bad timezone", edit: func(p *Policy) { p.Tiers[2].Timezone = "Mars/Olympus_Mons" }, field: "tiers[2].timezone", text: "unknown time zone"},
		{name: "host-local timezone", edit: func(p *Policy) { p.Tiers[2].Timezone = "Local" }, field: "tiers[2].timezone", text: "depends on each host"},
		{name: "CRON_TZ disagrees with timezone", edit: func(p *Policy) {
			p.Tiers[0].Schedule, p.Tiers[0].Timezone = "CRON_TZ=Asia/Tokyo 0 2 * * 0", "Europe/Berlin"
			p.Normalize()
		}, field: "tiers[0].schedule", text: "give the zone once"},
		{name: "retention shorter than interval", edit: func(p *Policy) { p.Tiers[0].KeepCount, p.Tiers[0].KeepAge = 0, 3*Day },
			field: "tiers[0].keep_age", text: "shorter than the schedule's longest interval between runs (7d)"},
		{name: "retention equal to interval", edit: func(p *Policy) { p.Tiers[0].KeepCount, p.Tiers[0].KeepAge = 0, 7*Day }},
		{name: "short keep_age with keep_count: the newest are kept anyway", edit: func(p *Policy) { p.Tiers[0].KeepAge = Day }},
		{name: "diff without full", edit: func(p *Policy) { p.Tiers = p.Tiers[1:] }, field: "tiers[0].type", text: "needs a full tier"},
		{name: "incr only", edit: func(p *Policy) { p.Tiers = p.Tiers[2:] }, field: "tiers[0].type", text: "needs a full tier"},
		{name: "duplicate name", edit: func(p *Policy) { p.Tiers[2].Name = "full" }, field: "tiers[2].name", text: "also the name of tiers[0]"},
		{name: "bad name", edit: func(p *Policy) { p.Tiers[1].Name = "daily backups" }, field: "tiers[1].name", text: "not a valid tier name"},
		// Tier names are what pgdr-agent backup --tier and expire --keep-tier
		// accept, so that expiry can name every tier's manifests.
		{name: "upper-case name", edit: func(p *Policy) { p.Tiers[1].Name = "Weekly" }, field: "tiers[1].name", text: "not a valid tier name"},
		{name: "dot in name", edit: func(p *Policy) { p.Tiers[0].Name = "db.daily" }, field: "tiers[0].name", text: "not a valid tier name"},
		{name: "name starting with '-'", edit: func(p *Policy) { p.Tiers[0].Name = "-daily" }, field: "tiers[0].name", text: "not a valid tier name"},
		{name: "name too long", edit: func(p *Policy) { p.Tiers[0].Name = strings.Repeat("a", 64) }, field: "tiers[0].name", text: "not a valid tier name"},
		{name: "name of digits, '_' and '-'", edit: func(p *Policy) { p.Tiers[0].Name = "0db_daily-2" }},
		{name: "name of 63 characters", edit: func(p *Policy) { p.Tiers[0].Name = strings.Repeat("a", 63) }},
		{name: "upper-case repo name still accepted", edit: func(p *Policy) { p.Tiers[2].Repos = []string{"S3.eu"} }},
		{name: "bad type", edit: func(p *Policy) { p.Tiers[1].Type = "differential" }, field: "tiers[1].type", text: "want full, diff or incr"},
		{name: "negative keep_count", edit: func(p *Policy) { p.Tiers[0].KeepCount = -1 }, field: "tiers[0].keep_count", text: "negative"},
		{name: "negative keep_age", edit: func(p *Policy) { p.Tiers[1].KeepAge = -Day }, field: "tiers[1].keep_age", text: "negative"},
		{name: "no retention", edit: func(p *Policy) { p.Tiers[0].KeepCount = 0 }, field: "tiers[0].keep_count", text: "no retention"},
		{name: "negative timeout", edit: func(p *Policy) { p.Tiers[0].Timeout = -time.Hour }, field: "tiers[0].timeout", text: "negative"},
		{name: "fractional timeout", edit: func(p *Policy) { p.Tiers[0].Timeout = 1500 * time.Millisecond }, field: "tiers[0].timeout", text: "whole number of seconds"},
		{name: "negative pitr window", edit: func(p *Policy) { p.PITRWindow = -Day }, field: "pitr_window", text: "negative"},
		{name: "no pitr window (an API request leaving the field out)", edit: func(p *Policy) { p.PITRWindow = 0 }, field: "pitr_window", text: "missing or 0"},
		{name: "bad run_on", edit: func(p *Policy) { p.Tiers[0].RunOn = "replica" }, field: "tiers[0].run_on", text: "want prefer-standby, standby-only or primary"},
		{name: "repo listed twice", edit: func(p *Policy) { p.Tiers[2].Repos = []string{"local", "local"} }, field: "tiers[2].repos[1]", text: "listed twice"},
		{name: "bad repo name", edit: func(p *Policy) { p.Tiers[2].Repos = []string{"s3 eu"} }, field: "tiers[2].repos[0]", text: "not a valid repository name"},
		{name: "unknown repo when the agents' repos are known", opts: Options{KnownRepos: []string{"local"}},
			edit: func(*Policy) {}, field: "tiers[2].repos[1]", text: `unknown repository "s3-eu"`},
		{name: "known repos accepted", opts: Options{KnownRepos: []string{"local", "s3-eu"}}, edit: func(*Policy) {}},
		{name: "no tiers", edit: func(p *Policy) { p.Tiers = nil }, field: "tiers", text: "at least one tier"},
		{name: "too many tiers", edit: func(p *Policy) {
			for len(p.Tiers) <= MaxTiers {
				t := p.Tiers[0]
				t.Name = "t" + strings.Repeat("x", len(p.Tiers))
				p.Tiers = append(p.Tiers, t)
			}
		}, field: "tiers", text: "at most 16"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := valid()
			c.edit(&p)
			err := p.Validate(c.opts)
			if c.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error on %s, got none", c.field)
			}
			if !strings.Contains(err.Error(), c.field+": ") || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("want %s: ...%s..., got %v", c.field, c.text, err)
			}
		})
	}
}

// TestCheckBoundsTierNames: the FSM's check keeps the coordinators' wider
// name alphabet for tier names, so that a policy it accepted before
// Validate narrowed them still applies when its log is replayed; new
// policies are held to tiername.Valid by Validate, on the proposer.
func TestCheckBoundsTierNames(t *testing.T) {
	p := valid()
	p.Tiers[0].Name, p.Tiers[1].Name = "Weekly", "db.daily"
	if err := p.CheckBounds(); err != nil {
		t.Fatalf("CheckBounds refuses a tier name it accepted before: %v", err)
	}
	if err := p.Validate(Options{}); err == nil {
		t.Fatal("Validate accepts tier names expire --keep-tier cannot name")
	}
	p.Tiers[0].Name = "daily backups"
	if err := p.CheckBounds(); err == nil || !strings.Contains(err.Error(), "tiers[0].name") {
		t.Fatalf("CheckBounds on a name outside the coordinators' alphabet: %v", err)
	}
}

// TestDSTInterval: a daily run at 02:30 Berlin time does not happen on the
// night clocks go forward (that 02:30 does not exist), so its longest
// interval is 47 hours and a keep_age of 1 or 2 days (less than 47h) would leave a gap.
func TestDSTInterval(t *testing.T) {
	p := Policy{PITRWindow: Day, Tiers: []Tier{{Name: "daily", Type: TypeFull, Schedule: "30 2 * * *", Timezone: "Europe/Berlin", KeepAge: 36 * time.Hour}}}
	p.Normalize()
	err := p.Validate(Options{})
	if err == nil || !strings.Contains(err.Error(), "tiers[0].keep_age: 1d12h is shorter than the schedule's longest interval between runs (1d23h)") {
		t.Fatalf("want the 47h DST gap named, got %v", err)
	}
	p.Tiers[0].KeepAge = 2 * Day
	if err := p.Validate(Options{}); err != nil {
		t.Fatal(err)
	}
	p.Tiers[0].Timezone = "UTC"
	p.Tiers[0].KeepAge = Day
	if err := p.Validate(Options{}); err != nil {
		t.Fatalf("in UTC a day is enough: %v", err)
	}
}
