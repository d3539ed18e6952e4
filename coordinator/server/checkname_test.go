package server

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestCheckNameMatchesNameRE: checkName (fsm.ValidName, no regexp: it runs
// on every agent report) accepts exactly what nameRE matches.
func TestCheckNameMatchesNameRE(t *testing.T) {
	names := []string{"a", "A", "0", "pg-a1", "c1.eu_west-1", ".a", "_a", "-a", "a.", "a-", "a_", "a b", "a\n", "\na",
		"é", "aé", "a/b", "a:b", strings.Repeat("a", 63), strings.Repeat("a", 64), "a" + strings.Repeat(".", 62), "a" + strings.Repeat(".", 63)}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "aZ09._-/ é\n"
	for range 2000 {
		b := make([]rune, rng.IntN(66)+1)
		for i := range b {
			b[i] = []rune(alphabet)[rng.IntN(len([]rune(alphabet)))]
		}
		names = append(names, string(b))
	}
	for _, n := range names {
		if got, want := checkName("cluster", n, true) == nil, nameRE.MatchString(n); got != want {
			t.Errorf("checkName(%q) accepts %v, nameRE matches %v", n, got, want)
		}
	}
}
