package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestDue reads like a list of incidents: given the policy's tiers, their
// last runs and the time, which tiers are due, since which slot, and how
// many slots were missed. A tier is due once however many slots passed.
func TestDue(t *testing.T) {
	hourly := Tier{Name: "hourly", Type: TypeIncr, Schedule: "0 * * * *", KeepAge: 7 * Day}
	daily := Tier{Name: "daily", Type: TypeFull, Schedule: "15 1 * * *", KeepAge: 30 * Day}
	berlin := Tier{Name: "berlin", Type: TypeFull, Schedule: "30 2 * * *", Timezone: "Europe/Berlin", KeepAge: 3 * Day}
	nyHourly := Tier{Name: "ny", Type: TypeIncr, Schedule: "30 * * * *", Timezone: "America/New_York", KeepAge: Day}
	everySec := Tier{Name: "sec", Type: TypeIncr, Schedule: "*/1 * * * * *", KeepCount: 10}
	cases := []struct {
		name    string
		tiers   []Tier
		setAt   string
		last    map[string]string
		now     string
		want    string // "tier@slot×missed" of the due tiers, in order; "" = none due
		wantErr string
	}{
		{name: "#1 on time: the hourly slot just passed", tiers: []Tier{hourly},
			last: map[string]string{"hourly": "2026-05-01 09:00:02"}, now: "2026-05-01 10:00:00", want: "hourly@2026-05-01T10:00:00Z×1"},
		{name: "#2 not yet: one second before the slot", tiers: []Tier{hourly},
			last: map[string]string{"hourly": "2026-05-01 09:00:02"}, now: "2026-05-01 09:59:59", want: ""},
		{name: "#3 just ran: the run started after the slot, nothing due", tiers: []Tier{hourly},
			last: map[string]string{"hourly": "2026-05-01 10:00:01"}, now: "2026-05-01 10:30:00", want: ""},
		{name: "#4 two-week outage: one catch-up run, 336 slots counted", tiers: []Tier{hourly, daily},
			last: map[string]string{"hourly": "2026-05-01 09:00:00", "daily": "2026-05-01 01:15:00"}, now: "2026-05-15 09:00:00",
			want: "daily@2026-05-02T01:15:00Z×14 hourly@2026-05-01T10:00:00Z×336"},
		{name: "#5 after the catch-up run (recorded at its start) nothing is due until the next slot", tiers: []Tier{hourly},
			last: map[string]string{"hourly": "2026-05-15 09:00:05"}, now: "2026-05-15 09:59:00", want: ""},
		{name: "#6 second-level schedule after a long outage: still once, count capped", tiers: []Tier{everySec},
			last: map[string]string{"sec": "2026-05-01 00:00:00"}, now: "2026-05-02 00:00:00", want: fmt.Sprintf("sec@2026-05-01T00:00:01Z×%d", MaxCountedMissed)},
		{name: "#7 never ran, policy set an hour ago: counts from the policy's time", tiers: []Tier{hourly, daily},
			setAt: "2026-05-01 09:30:00", now: "2026-05-01 10:00:00", want: "hourly@2026-05-01T10:00:00Z×1"},
		{name: "#8 never ran and no policy time (the defaults): due now, once", tiers: []Tier{hourly, daily},
			now: "2026-05-01 10:20:00", want: "daily@2026-05-01T10:20:00Z×1 hourly@2026-05-01T10:20:00Z×1"},
		{name: "#9 last run in the future (clock skew): not due", tiers: []Tier{hourly},
			last: map[string]string{"hourly": "2026-05-01 12:00:00"}, now: "2026-05-01 10:00:00", want: ""},
		{name: "#10 Berlin 02:30 in winter is 01:30 UTC", tiers: []Tier{berlin},
			last: map[string]string{"berlin": "2026-01-10 01:30:00"}, now: "2026-01-11 01:30:00", want: "berlin@2026-01-11T01:30:00Z×1"},
		{name: "#11 Berlin 02:30 in summer is 00:30 UTC", tiers: []Tier{berlin},
			last: map[string]string{"berlin": "2026-07-10 00:30:00"}, now: "2026-07-11 00:30:00", want: "berlin@2026-07-11T00:30:00Z×1"},
		{name: "#12 spring forward: 02:30 does not exist on 29 March, the next run is 30 March", tiers: []Tier{berlin},
			last: map[string]string{"berlin": "2026-03-28 01:30:00"}, now: "2026-03-29 12:00:00", want: ""},
		{name: "#13 spring forward: due again on 30 March at 00:30 UTC", tiers: []Tier{berlin},
			last: map[string]string{"berlin": "2026-03-28 01:30:00"}, now: "2026-03-30 00:30:00", want: "berlin@2026-03-30T00:30:00Z×1"},
		{name: "#14 fall back: 02:30 happens twice on 25 October (CEST then CET), cron runs at both", tiers: []Tier{berlin},
			last: map[string]string{"berlin": "2026-10-25 00:30:00"}, now: "2026-10-25 01:30:00", want: "berlin@2026-10-25T01:30:00Z×1"},
		{name: "#15 fall back missed entirely: both 02:30s count, one run", tiers: []Tier{berlin},
			last: map[string]string{"berlin": "2026-10-24 00:30:00"}, now: "2026-10-25 02:00:00", want: "berlin@2026-10-25T00:30:00Z×2"},
		{name: "#16 New York hourly across the November fall back: every real hour once", tiers: []Tier{nyHourly},
			last: map[string]string{"ny": "2026-11-01 04:30:00"}, now: "2026-11-01 07:45:00", want: "ny@2026-11-01T05:30:00Z×3"},
		{name: "#17 fulls first, then incrs, whatever the slot order", tiers: []Tier{hourly, daily},
			last: map[string]string{"hourly": "2026-05-01 00:00:00", "daily": "2026-04-30 01:15:00"}, now: "2026-05-01 01:30:00",
			want: "daily@2026-05-01T01:15:00Z×1 hourly@2026-05-01T01:00:00Z×1"},
		{name: "#18 a bad schedule is an error, not a silent skip", tiers: []Tier{{Name: "x", Type: TypeFull, Schedule: "nope"}},
			now: "2026-05-01 10:00:00", wantErr: "tier x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Policy{Tiers: c.tiers}
			if c.setAt != "" {
				p.UpdatedAt = utc(c.setAt)
			}
			p.Normalize()
			last := map[string]time.Time{}
			for k, v := range c.last {
				last[k] = utc(v)
			}
			runs, err := Due(p, last, utc(c.now))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("want error %q, got %v (%v)", c.wantErr, err, runs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range runs {
				got = append(got, fmt.Sprintf("%s@%s×%d", r.Tier, r.At.UTC().Format(time.RFC3339), r.Missed))
			}
			if s := strings.Join(got, " "); s != c.want {
				t.Fatalf("due:\n got %q\nwant %q", s, c.want)
			}
		})
	}
}

// TestNextRuns: not-due tiers say when they run next, in their own zone.
func TestNextRuns(t *testing.T) {
	p := Policy{Tiers: []Tier{
		{Name: "tokyo", Type: TypeFull, Schedule: "0 3 * * *", Timezone: "Asia/Tokyo", KeepAge: 2 * Day},
		{Name: "incr", Type: TypeIncr, Schedule: "0 0 */6 * * *", KeepAge: Day},
	}}
	p.Normalize()
	now := utc("2026-05-01 10:00:00")
	runs, err := NextRuns(p, map[string]time.Time{"tokyo": utc("2026-05-01 09:00:00"), "incr": utc("2026-05-01 06:00:00")}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Due || runs[1].Due {
		t.Fatalf("runs %+v", runs)
	}
	// 03:00 in Tokyo (UTC+9) is 18:00 UTC the day before.
	if got := runs[0].At.UTC(); !got.Equal(utc("2026-05-01 18:00:00")) {
		t.Errorf("tokyo next at %s", got)
	}
	if got := runs[1].At.UTC(); !got.Equal(utc("2026-05-01 12:00:00")) {
		t.Errorf("incr next at %s", got)
	}
}
