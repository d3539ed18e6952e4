package duration

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Day, Week and Year (365 days) are the units d, w and y of Parse.
const (
	Day  = 24 * time.Hour
	Week = 7 * Day
	Year = 365 * Day
)

// Parse reads a duration: Go's form (90m, 1h30m) extended with d (day),
// w (week) and y (365 days) leading it: 7d, 12w, 7y, 1d12h. A leading '-'
// is kept so that a caller can say the value is negative.
func Parse(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	rest, neg := strings.CutPrefix(in, "-")
	if rest == "" {
		return 0, fmt.Errorf("%q is not a duration: want a number with a unit (s, m, h, d, w, y), as 7d or 36h", clip(s))
	}
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) {
			break
		}
		var unit time.Duration
		switch rest[i] {
		case 'd':
			unit = Day
		case 'w':
			unit = Week
		case 'y':
			unit = Year
		}
		if unit == 0 {
			break
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil || n > int64(math.MaxInt64/unit) || total > math.MaxInt64-time.Duration(n)*unit {
			return 0, fmt.Errorf("%q is out of range", clip(s))
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 || total > math.MaxInt64-d {
			return 0, fmt.Errorf("%q is not a duration: want a number with a unit (s, m, h, d, w, y), as 7d or 36h", clip(s))
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}

// Format writes d the way Parse reads it, in the largest whole units:
// 7y, 12w, 30d, 7d, 1d12h, 1h30m.
func Format(d time.Duration) string {
	if d < 0 {
		return "-" + Format(-d)
	}
	if d == 0 {
		return "0s"
	}
	if d%Year == 0 {
		return strconv.FormatInt(int64(d/Year), 10) + "y"
	}
	// Weeks from two on: a week reads better as 7d.
	if d%Week == 0 && d >= 2*Week {
		return strconv.FormatInt(int64(d/Week), 10) + "w"
	}
	days, rest := d/Day, d%Day
	var b strings.Builder
	if days > 0 {
		b.WriteString(strconv.FormatInt(int64(days), 10) + "d")
	}
	if rest > 0 {
		s := rest.String()
		// time.Duration writes 2h0m0s; drop the zero tails.
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		b.WriteString(s)
	}
	return b.String()
}

// clip shortens a value quoted in an error so that a hostile or mistaken
// megabyte does not end up in a message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
