package incident

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// An id is never given twice, even after Compact dropped the incident that
// had it.
func TestSeqNeverReused(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxResolved = 0
	st, _, _ := Observe(State{}, sig(5, "a", "x"), lim, t0)
	st, _ = Resolve(st, "INC-5", "alice", "done", lim, t0)
	st, c, _ := Compact(st, lim, t0)
	if len(c.Dropped) != 1 {
		t.Fatalf("dropped %v, want INC-5", c.Dropped)
	}
	for _, seq := range []uint64{5, 4} {
		if _, _, err := Observe(st, sig(seq, "b", "y"), lim, t0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "seq") {
			t.Fatalf("seq %d after INC-5: err = %v, want ErrInvalid naming seq", seq, err)
		}
	}
	if _, _, err := Observe(st, sig(6, "b", "y"), lim, t0); err != nil {
		t.Fatalf("seq 6: %v", err)
	}
}

func TestAutoResolvePolicyValidate(t *testing.T) {
	lim := DefaultLimits()
	st, _, _ := Observe(State{}, sig(1, "a", "x"), lim, t0)
	for _, c := range []struct {
		name  string
		p     AutoResolvePolicy
		field string
	}{
		{"negative hold", AutoResolvePolicy{Categories: []Category{CopyLag}, Hold: -time.Minute}, "hold"},
		{"unknown category", AutoResolvePolicy{Categories: []Category{"boom"}, Hold: time.Minute}, "category"},
	} {
		if _, _, err := AutoResolve(st, c.p, t0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: err = %v, want ErrInvalid naming %s", c.name, err, c.field)
		}
	}
}
