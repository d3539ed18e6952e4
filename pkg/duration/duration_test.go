package duration

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * Day, "12w": 84 * Day, "7y": 7 * Year, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute,
		"1h30m": 90 * time.Minute, "-1d": -Day, " 30s ": 30 * time.Second, "0": 0, "1y2w3d4h": Year + 17*Day + 4*time.Hour,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "7", "d", "7days", "1.5d", "-", "99999999999y", "1d-2h", "h1"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, got)
		}
	}
	for d, want := range map[time.Duration]string{
		7 * Year: "7y", 84 * Day: "12w", 7 * Day: "7d", 14 * Day: "2w", 30 * Day: "30d", 36 * time.Hour: "1d12h", 90 * time.Minute: "1h30m",
		2 * time.Hour: "2h", 0: "0s", -Day: "-1d", 26*time.Hour + 30*time.Second: "1d2h0m30s",
	} {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", d, got, want)
		}
		if back, err := Parse(Format(d)); err != nil || back != d {
			t.Errorf("round trip of %v: %v, %v", d, back, err)
		}
	}
}
