package restore

import (
	"strings"
	"testing"
	"time"
)

func TestParseTargetTime(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no time zone database")
	}
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "2026-12-07T01:15:39Z", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07T01:15:39.123456Z", want: utc("2026-12-07T01:15:39.123456Z")},
		{in: "2026-12-07T03:15:39+02:00", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07 01:15:39+00", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07 01:15:39.5+00", want: utc("2026-12-07T01:15:39.5Z")},
		{in: "2026-12-07 03:15:39 +02:00", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07 03:15:39+0200", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-06 20:15:39-05", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07 01:15:39 UTC", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07T01:15:39 UTC", want: utc("2026-12-07T01:15:39Z")},
		{in: "2026-12-07 01:15 UTC", want: utc("2026-12-07T01:15:00Z")},
		{in: "2026-12-07 02:15:39 Europe/Paris", want: time.Date(2026, 12, 7, 2, 15, 39, 0, paris)},
		{in: "2026-12-07T01:15:39", err: "has no time zone"},
		{in: "2026-12-07 01:15:39", err: "has no time zone"},
		{in: "2026-12-07 01:15:39 Mars/Olympus", err: "unknown time zone"},
		{in: "yesterday", err: "not a time"},
		{in: "", err: "empty"},
	} {
		got, err := ParseTargetTime(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%q: got %v %v, want %v", tc.in, got, err, tc.want)
		}
	}
}
