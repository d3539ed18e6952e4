package compliance

import (
	"slices"
	"time"
)

// MaxOpen bounds the open breaches kept per cluster: a breach is keyed by
// target and subject (a repository name), so real clusters stay far below.
const MaxOpen = 64

// ClearAfter is how many consecutive decisions without a breach clear it:
// a value hovering at its target does not start and clear a breach every
// round (one notification each way per episode).
const ClearAfter = 3

// OpenBreach is a breach the leader has announced and not cleared.
type OpenBreach struct {
	Breach
	Since time.Time
	// absent: consecutive decisions without it (cleared at clearAfter).
	absent int
}

// Change is what Update found: breaches that started and breaches that
// cleared since the previous decision.
type Change struct {
	Started []Breach
	Cleared []OpenBreach
}

// Open is the set of announced breaches of one cluster. It is not safe for
// concurrent use; the leader keeps one per cluster under its lock.
type Open struct {
	m          map[string]OpenBreach
	clearAfter int
}

// NewOpen returns an empty set, or one holding known (announced and not
// cleared according to the history a new leader read). A breach clears
// once clearAfter consecutive decisions lacked it (at least 1).
func NewOpen(known map[string]OpenBreach, clearAfter int) *Open {
	o := &Open{m: map[string]OpenBreach{}, clearAfter: max(1, clearAfter)}
	for k, b := range known {
		if len(o.m) >= MaxOpen {
			break
		}
		o.m[k] = b
	}
	return o
}

// Update takes the current decision: a breach not open yet starts, an open
// one missing from clearAfter decisions in a row clears, one still decided
// keeps its start (its measured value is refreshed). Each breach thus yields one start and one
// clear, however many decisions it spans. Beyond MaxOpen new breaches are
// not tracked (nor announced).
func (o *Open) Update(now time.Time, decided []Breach) Change {
	return o.UpdateMeasured(now, decided, func(string) bool { return true })
}

// UpdateMeasured is Update where measured says which targets this
// decision measured (Measured.Measures): an open breach of a target not
// measured is kept as it is (no measurement is no evidence that it is
// back within the target).
func (o *Open) UpdateMeasured(now time.Time, decided []Breach, measured func(target string) bool) Change {
	var ch Change
	seen := map[string]bool{}
	for _, b := range decided {
		k := b.Key()
		seen[k] = true
		if cur, ok := o.m[k]; ok {
			cur.Breach, cur.absent = b, 0
			o.m[k] = cur
			continue
		}
		if len(o.m) >= MaxOpen {
			continue
		}
		o.m[k] = OpenBreach{Breach: b, Since: now}
		ch.Started = append(ch.Started, b)
	}
	for _, k := range o.Keys() {
		if seen[k] {
			continue
		}
		cur := o.m[k]
		if !measured(cur.Target) {
			continue
		}
		if cur.absent++; cur.absent < o.clearAfter {
			o.m[k] = cur
			continue
		}
		ch.Cleared = append(ch.Cleared, cur)
		delete(o.m, k)
	}
	return ch
}

// Keys returns the open breaches' keys, sorted.
func (o *Open) Keys() []string {
	ks := make([]string, 0, len(o.m))
	for k := range o.m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// List returns the open breaches sorted by key.
func (o *Open) List() []OpenBreach {
	out := make([]OpenBreach, 0, len(o.m))
	for _, k := range o.Keys() {
		out = append(out, o.m[k])
	}
	return out
}
