package tiername

import (
	"regexp"
	"strings"
	"testing"
)

// TestValid: Valid is the regular expression its doc comment gives, on
// the edge cases and on every single byte at each position.
func TestValid(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	names := []string{"", "daily", "0", "a-b_c", "db.daily", "Weekly", "-x", "_x", "x-", "daily backups", "dé",
		strings.Repeat("a", 63), strings.Repeat("a", 64)}
	for c := 0; c < 256; c++ {
		names = append(names, string([]byte{byte(c)}), "a"+string([]byte{byte(c)}))
	}
	for _, n := range names {
		if got, want := Valid(n), re.MatchString(n); got != want {
			t.Errorf("Valid(%q) = %v, want %v", n, got, want)
		}
	}
}
