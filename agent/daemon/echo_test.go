package daemon

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestCheckNowEchoesOnlyEarlierCommands: a round of checks names the
// command received before it began, not one that arrives (on the same
// clock) once it has begun, even if noted before the round ends.
func TestCheckNowEchoesOnlyEarlierCommands(t *testing.T) {
	d := New(testConfig(t, ""), nil, slog.New(slog.DiscardHandler))
	base := time.Now()
	d.monitor.Received("before", base.Add(-time.Second))
	d.now = func() time.Time {
		// A command arrives as the round begins, stamped just after.
		d.monitor.Received("during", base.Add(time.Millisecond))
		return base
	}
	if r := d.monitor.CheckNow(context.Background()); r.AfterCommandId != "before" {
		t.Fatalf("the round names %q, want %q (received before it began)", r.AfterCommandId, "before")
	}
	if r := d.monitor.Latest(); r.AfterCommandId != "before" {
		t.Fatalf("the published report names %q", r.AfterCommandId)
	}
	d.now = func() time.Time { return base.Add(time.Second) }
	if r := d.monitor.CheckNow(context.Background()); r.AfterCommandId != "during" {
		t.Fatalf("the next round names %q, want %q", r.AfterCommandId, "during")
	}
}
