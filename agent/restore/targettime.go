package restore

import (
	"fmt"
	"strings"
	"time"
)

// ParseTargetTime reads a recovery target time as an operator writes it:
// RFC 3339 (2026-12-07T01:15:39Z, …+02:00), or PostgreSQL's form with a
// space and any of its zone spellings (2026-12-07 01:15:39+00,
// 2026-12-07 01:15:39.5 +02:00, 2026-12-07 01:15:39 UTC, … Europe/Paris).
// A time without a zone is refused: PostgreSQL would read it in the
// server's TimeZone setting, which a restore cannot know, and a guess off by
// hours restores the wrong data without an error.
func ParseTargetTime(s string) (time.Time, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return time.Time{}, fmt.Errorf("--target-time: empty")
	}
	norm := in
	if len(norm) > 10 && norm[10] == 'T' { // 2006-01-02T15:04…
		norm = norm[:10] + " " + norm[11:]
	}
	// Split off a named zone: "… UTC", "… Z", "… Europe/Paris".
	var loc *time.Location
	if i := strings.LastIndexByte(norm, ' '); i > len("2006-01-02") {
		name := norm[i+1:]
		switch {
		case name == "UTC" || name == "GMT" || name == "Z" || name == "utc" || name == "z":
			loc, norm = time.UTC, norm[:i]
		case strings.Contains(name, "/"):
			l, err := time.LoadLocation(name)
			if err != nil {
				return time.Time{}, fmt.Errorf("--target-time %q: unknown time zone %q: %w", s, name, err)
			}
			loc, norm = l, norm[:i]
		}
	}
	// Numeric zones: "+02", "+0200", "+02:00", "Z", with or without a space.
	norm = strings.Replace(norm, " +", "+", 1)
	norm = strings.Replace(norm, " -", "-", 1)
	if loc == nil {
		for _, layout := range []string{
			"2006-01-02 15:04:05.999999999Z07:00",
			"2006-01-02 15:04:05.999999999Z0700",
			"2006-01-02 15:04:05.999999999Z07",
			"2006-01-02 15:04Z07:00",
			"2006-01-02 15:04Z07",
		} {
			if t, err := time.Parse(layout, norm); err == nil {
				return t, nil
			}
		}
	}
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02 15:04"} {
		t, err := time.Parse(layout, norm)
		if err != nil {
			continue
		}
		if loc == nil {
			return time.Time{}, fmt.Errorf("--target-time %q has no time zone: PostgreSQL would read it in the server's TimeZone, which the restore cannot know; add one (%sZ, %s+00, %s UTC, or an IANA name such as %s Europe/Paris)",
				s, t.Format("2006-01-02T15:04:05"), t.Format("2006-01-02 15:04:05"), t.Format("2006-01-02 15:04:05"), t.Format("2006-01-02 15:04:05"))
		}
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), loc), nil
	}
	return time.Time{}, fmt.Errorf("--target-time %q: not a time: use RFC 3339 (2026-11-26T08:17:00.123456Z) or PostgreSQL's form ('2026-11-26 08:17:00+00', '2026-11-26 08:17:00 UTC')", s)
}
