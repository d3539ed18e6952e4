package server

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestCommandResultBounded: a command result's error and output are cut
// to maxResultText bytes (valid UTF-8, with a marker) before anything
// keeps them — they go into Raft history — while the result itself is
// accepted, so a legitimately long output still completes the command.
func TestCommandResultBounded(t *testing.T) {
	s := testServer(t, Options{Barrier: func(time.Duration) error { return nil }})
	api := &agentAPI{s: s}
	long := strings.Repeat("é", 3*maxResultText) // two bytes a rune
	for _, r := range []*pgdrv1.CommandResult{
		{Id: "a", Cluster: "main", Node: "pg-a", Ok: true, Output: long, Error: ""},
		{Id: "b", Cluster: "main", Node: "pg-a", Ok: false, Output: "short", Error: "x" + long},
	} {
		want := struct {
			Id, Output, Error string
			Ok                bool
		}{r.Id, r.Output, r.Error, r.Ok}
		if _, err := api.CompleteCommand(context.Background(), r); err != nil {
			t.Fatalf("CompleteCommand: %v", err)
		}
		got := s.hub.lastResult(memberKey{"main", "pg-a"})
		if got == nil || got.Id != want.Id || got.Ok != want.Ok {
			t.Fatalf("result kept: %+v", got)
		}
		for _, f := range []struct{ name, got, sent string }{{"output", got.Output, want.Output}, {"error", got.Error, want.Error}} {
			if len(f.got) > maxResultText || !utf8.ValidString(f.got) {
				t.Errorf("%s kept as %d bytes (valid UTF-8: %v), want at most %d", f.name, len(f.got), utf8.ValidString(f.got), maxResultText)
			}
			if len(f.sent) <= maxResultText && f.got != f.sent {
				t.Errorf("%s %q changed to %q", f.name, f.sent, f.got)
			}
			if len(f.sent) > maxResultText && !strings.Contains(f.got, "[truncated") {
				t.Errorf("%s cut without a marker: ...%q", f.name, f.got[max(0, len(f.got)-40):])
			}
		}
	}
}
