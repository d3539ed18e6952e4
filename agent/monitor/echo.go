package monitor

import (
	"sync"
	"time"
)

// receivedKeep bounds the commands commandEcho remembers: the latest one
// received before a round of checks began is among them unless more than
// this many arrived during the round (then the round echoes none).
const receivedKeep = 8

// commandEcho remembers the latest commands received from the coordinator
// leader and when they arrived, on the agent's clock (Deps.Clock, with
// its monotonic reading), so that every health report can name the latest
// one received before its checks began (HealthReport.after_command_id).
// The leader knows when it sent that command: the report was sampled after
// that, however late it arrives (a report cached from before a new session
// is sent again when the session opens). A command received after the
// checks began is never named: the server may have changed before it.
type commandEcho struct {
	mu   sync.Mutex
	recv [receivedKeep]receivedID // a ring, next the oldest
	n    int                      // entries in use
	next int
}

// receivedID is one command's id and when it arrived.
type receivedID struct {
	id string
	at time.Time
}

// received notes command id arriving at at (stamped on its arrival on the
// stream, not when it is carried out).
func (e *commandEcho) received(id string, at time.Time) {
	if id == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.recv[e.next] = receivedID{id: id, at: at}
	e.next = (e.next + 1) % receivedKeep
	e.n = min(e.n+1, receivedKeep)
}

// before is the id of the latest command received at or before start (the
// time a round of checks began, on the same clock), "" when none is
// remembered. Commands arrive in order, so the latest one kept that
// arrived by start is the latest one that did.
func (e *commandEcho) before(start time.Time) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := 1; i <= e.n; i++ {
		r := e.recv[(e.next-i+receivedKeep)%receivedKeep]
		if !r.at.After(start) {
			return r.id
		}
	}
	return ""
}
