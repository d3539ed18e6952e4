package lease

import (
	"sync"
	"time"
)

// Holder is the agent's lease as everyone reads and changes it: a Lease
// under a mutex of its own, or none (no coordinator.addresses: nothing
// to renew, and /primary follows the report alone). It implements the
// failsafe's Lease (agent/failsafe). Its zero value holds no lease.
type Holder struct {
	mu sync.Mutex
	l  *Lease // nil without coordinators
}

// NewHolder holds l (nil: no lease).
func NewHolder(l *Lease) *Holder { return &Holder{l: l} }

// Set replaces the lease held (nil: none).
func (h *Holder) Set(l *Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.l = l
}

// Update calls f with the lease under the mutex, and not at all without
// one; f must not call back into the holder.
func (h *Holder) Update(f func(l *Lease)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l != nil {
		f(h.l)
	}
}

// Enabled reports whether a lease is held (coordinators are configured).
func (h *Holder) Enabled() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.l != nil
}

// Serving is the lease's own verdict at now (Lease.Serving); without a
// lease it serves.
func (h *Holder) Serving(now time.Time) (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l == nil {
		return true, ""
	}
	return h.l.Serving(now)
}

// Status reads at once whether a renewal was granted since the node
// became primary, why it is fenced ("" when it is not), and the deadline;
// without a lease: nothing granted, not fenced, no deadline.
func (h *Holder) Status() (granted bool, fenced string, deadline time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l == nil {
		return false, "", time.Time{}
	}
	return h.l.Granted(), h.l.Fenced(), h.l.Deadline()
}

// Granted reports whether a lease is held and a grant was seen since the
// node last was positively not a primary.
func (h *Holder) Granted() bool {
	g, _, _ := h.Status()
	return g
}

// Fenced returns why the node is fenced ("" when it is not, or without a
// lease).
func (h *Holder) Fenced() string {
	_, f, _ := h.Status()
	return f
}
