package monitor

import (
	"fmt"
	"testing"
	"time"
)

// TestCommandEchoBefore: review 4 of issue 12. A report names the latest
// command received at or before its checks began, never one received
// after (the server may have changed in between), and none when the
// commands kept all arrived after (more than receivedKeep during a round).
func TestCommandEchoBefore(t *testing.T) {
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var e commandEcho
	if got := e.before(at(0)); got != "" {
		t.Fatalf("nothing received: %q", got)
	}
	e.received("a", at(1))
	e.received("b", at(3))
	for _, c := range []struct {
		start int
		want  string
	}{{0, ""}, {1, "a"}, {2, "a"}, {3, "b"}, {4, "b"}} {
		if got := e.before(at(c.start)); got != c.want {
			t.Errorf("checks begun at %ds: %q, want %q", c.start, got, c.want)
		}
	}
	for i := range receivedKeep {
		e.received(fmt.Sprintf("late-%d", i), at(10+i))
	}
	if got := e.before(at(5)); got != "" {
		t.Errorf("every command kept arrived after the checks began: %q, want none (b is forgotten)", got)
	}
	if got := e.before(at(10 + receivedKeep)); got != fmt.Sprintf("late-%d", receivedKeep-1) {
		t.Errorf("after all of them: %q", got)
	}
}
