package divergenceid

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// pattern is a report id: its creation time (UTC, to the second) and the
// node's name.
var pattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// New is the id of the report node makes at t.
func New(node string, t time.Time) string {
	return t.UTC().Format("20060102T150405Z") + "-" + node
}

// ErrBad is wrapped by Check's error.
var ErrBad = errors.New("not a divergence report id (expected <yyyymmdd>T<hhmmss>Z-<node>, as `pgdrctl divergence` lists them)")

// Check returns an error wrapping ErrBad when id is not a report id.
func Check(id string) error {
	if !pattern.MatchString(id) {
		if len(id) > 64 {
			id = id[:64] + "…"
		}
		return fmt.Errorf("%q: %w", id, ErrBad)
	}
	return nil
}
