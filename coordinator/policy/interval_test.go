package policy

import (
	"testing"
	"time"
)

// TestInterval: the longest gap between two consecutive times of a
// schedule in its zone, from a given time.
func TestInterval(t *testing.T) {
	from := time.Date(2026, time.January, 7, 10, 0, 0, 0, time.UTC) // a Wednesday
	h := time.Hour
	cases := []struct {
		sched, tz string
		want      time.Duration
	}{
		{"5 * * * *", "", h},
		{"*/15 * * * *", "UTC", 15 * time.Minute},
		{"15 1 * * *", "UTC", 24 * h},
		{"@daily", "", 24 * h},
		{"15 2 * * 0", "UTC", 7 * 24 * h},
		{"15 3 1 * *", "UTC", 31 * 24 * h},
		{"0 2 * * 1-5", "UTC", 3 * 24 * h},
		{"0 2 * * 1-5", "Europe/Berlin", 3*24*h + h}, // the weekend of the switch back to winter time
		{"30 2 * * *", "Europe/Berlin", 47 * h},      // 02:30 does not exist on the spring-forward day
		{"0 0 1 1 *", "", 365 * 24 * h},              // yearly: two times even beyond 13 months
		{"0 0 0 * * *", "", 24 * h},                  // six fields, seconds first
	}
	for _, c := range cases {
		got, err := Interval(c.sched, c.tz, from)
		if err != nil {
			t.Fatalf("Interval(%q, %q): %v", c.sched, c.tz, err)
		}
		if got != c.want {
			t.Errorf("Interval(%q, %q) = %s, want %s", c.sched, c.tz, got, c.want)
		}
	}
	for _, bad := range [][2]string{{"", ""}, {"not cron", ""}, {"0 2 * * *", "Mars/Olympus"}, {"0 2 * * *", "Local"}, {"0 0 30 2 *", ""}} {
		if d, err := Interval(bad[0], bad[1], from); err == nil {
			t.Errorf("Interval(%q, %q) = %s, want an error", bad[0], bad[1], d)
		}
	}
}
