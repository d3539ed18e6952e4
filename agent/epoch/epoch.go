package epoch

import "sync"

// Tracker is the highest epoch seen. The zero value is ready to use (epoch
// 0: none seen yet); it must not be copied once used.
type Tracker struct {
	mu sync.Mutex
	e  uint64
}

// See records e if it is the highest epoch seen and returns the highest
// (See(0) just reads it).
func (t *Tracker) See(e uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.e = max(t.e, e)
	return t.e
}

// Current is the highest epoch seen (0: none yet).
func (t *Tracker) Current() uint64 { return t.See(0) }
