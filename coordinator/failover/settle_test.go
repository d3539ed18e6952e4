package failover

import (
	"strings"
	"testing"
	"time"
)

// TestPromoteSettled: review D10 and D11. An unsettled promotion counts as
// settled only on a fresh report that PostgreSQL is stopped and not
// connectable (never on "fenced", whose marker is written before the stop
// and stays when the stop failed, nor on a postmaster not seen while the
// server answers: review A), or once the settle deadline
// its agent promised to keep has passed, with no order of unknown promise
// out. A stopped report counts only when it was sampled after the last
// order went out (review 4: SampledAfter, from the command it names), not
// merely received after.
func TestPromoteSettled(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	const margin = time.Second
	const window = 10 * time.Second
	// Orders sent so long ago (on the leader's monotonic clock) that the
	// window plus the margin has passed, or not yet (within the margin).
	past, future := now.Add(-window-2*time.Second), now.Add(-window-500*time.Millisecond)
	replica := Member{Fresh: true, PostmasterAlive: true, Connectable: true, InRecovery: true}
	for _, c := range []struct {
		what    string
		u       Unsettled
		m       Member
		settled bool
		why     string
	}{
		{"no report, no promise", Unsettled{Node: "b"}, Member{}, false, "does not guarantee"},
		{"stopped", Unsettled{Node: "b", Since: past}, Member{Fresh: true, SampledAfter: now}, true, "stopped"},
		// review 3/2: a report from before the order says nothing of it.
		{"stopped, sampled before the order", Unsettled{Node: "b", Since: now}, Member{Fresh: true, SampledAfter: now.Add(-time.Second)}, false, "not sampled after"},
		{"stopped, no order start known", Unsettled{Node: "b"}, Member{Fresh: true, SampledAfter: now}, false, ""},
		// review 4: received after the order went out is not sampled after
		// it. A report cached by the agent (sent again when a new session
		// opens) or held up in transit may have been sampled before the
		// order, and the server started since.
		{"stopped, received after the order, sampled when unknown (no echo)", Unsettled{Node: "b", Since: past}, Member{Fresh: true}, false, "not sampled after"},
		{"stopped, received after the order, echoes an older command", Unsettled{Node: "b", Since: past}, Member{Fresh: true, SampledAfter: past.Add(-time.Second)}, false, "not sampled after"},
		{"stopped, echoes the order sent at Since", Unsettled{Node: "b", Since: past}, Member{Fresh: true, SampledAfter: past}, true, "stopped"},
		{"stopped, echoes a later command (a fence)", Unsettled{Node: "b", Since: past}, Member{Fresh: true, SampledAfter: past.Add(time.Second)}, true, "stopped"},
		{"stopped, echoes a command, no order start known", Unsettled{Node: "b"}, Member{Fresh: true, SampledAfter: past}, false, ""},
		// review A: postmaster.pid unreadable, or the PID namespace hides
		// the postmaster, while the server still answers.
		{"postmaster not seen but connectable (A)", Unsettled{Node: "b"}, Member{Fresh: true, Connectable: true}, false, ""},
		{"postmaster not seen, connectable, in recovery (A)", Unsettled{Node: "b"}, Member{Fresh: true, Connectable: true, InRecovery: true}, false, ""},
		{"stopped, stale report", Unsettled{Node: "b"}, Member{}, false, ""},
		{"fenced, still running writable (D11)", Unsettled{Node: "b"}, Member{Fresh: true, PostmasterAlive: true, Connectable: true, Fenced: true}, false, ""},
		{"fenced, running, recovery state unknown (D11)", Unsettled{Node: "b"}, Member{Fresh: true, PostmasterAlive: true, Fenced: true}, false, ""},
		// review A: the marker is written before PostgreSQL is stopped, and
		// a fence whose stop failed leaves a running replica whose pending
		// promotion can still complete.
		{"fenced and in recovery, still running (A)", Unsettled{Node: "b"}, Member{Fresh: true, PostmasterAlive: true, Connectable: true, InRecovery: true, Fenced: true}, false, ""},
		{"fenced and stopped", Unsettled{Node: "b", Since: past}, Member{Fresh: true, Fenced: true, SampledAfter: now}, true, "stopped"},
		{"in recovery, not fenced", Unsettled{Node: "b"}, replica, false, ""},
		{"settle deadline passed, honoured", Unsettled{Node: "b", Window: window, Since: past, Honoured: true}, Member{}, true, "not confirmed by its settle deadline"},
		{"settle deadline within the margin", Unsettled{Node: "b", Window: window, Since: future, Honoured: true}, Member{}, false, "drops the promotion unless confirmed within"},
		{"settle deadline passed, not honoured", Unsettled{Node: "b", Window: window, Since: past}, Member{}, false, "does not guarantee"},
		{"no settle deadline", Unsettled{Node: "b", Honoured: true, Since: past}, Member{}, false, "carried no settle deadline"},
		{"no start known", Unsettled{Node: "b", Honoured: true, Window: window}, Member{}, false, "does not know when"},
		{"an order in flight", Unsettled{Node: "b", InFlight: true, Window: window, Since: past, Honoured: true}, Member{}, false, "never recorded"},
		{"settle deadline passed, replica still running", Unsettled{Node: "b", Window: window, Since: past, Honoured: true}, replica, true, "settle deadline"},
	} {
		settled, why := PromoteSettled(c.u, c.m, now, margin)
		if settled != c.settled || !strings.Contains(why, c.why) || why == "" {
			t.Errorf("%s: settled=%v %q, want settled=%v and a reason with %q", c.what, settled, why, c.settled, c.why)
		}
	}
}
