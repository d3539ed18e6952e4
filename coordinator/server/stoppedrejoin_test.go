package server

import (
	"fmt"
	"testing"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestStoppedMustRejoin: a stopped member must rejoin when it lost the
// primary role (a failover, manual failover or switchover intent naming it
// old_primary) and has not rejoined successfully since, or when a
// failover's order to it to follow the new primary failed and it has not
// rejoined, followed or been re-pointed since: both read in one pass of
// the cluster's history.
func TestStoppedMustRejoin(t *testing.T) {
	ev := func(kind, node string, details ...string) *pgdrv1.HistoryEvent {
		e := &pgdrv1.HistoryEvent{Cluster: "main", Kind: kind, Node: node, Details: map[string]string{}}
		for i := 0; i+1 < len(details); i += 2 {
			e.Details[details[i]] = details[i+1]
		}
		return e
	}
	replaced := func(kind string) *pgdrv1.HistoryEvent { return ev(kind, "b", "old_primary", "m") }
	followStep := func(result string) *pgdrv1.HistoryEvent {
		return ev(kindFailoverStep, "m", "step", stepFollow, "result", result)
	}
	for _, tc := range []struct {
		name   string
		events []*pgdrv1.HistoryEvent
		want   bool
	}{
		{"no history", nil, false},
		{"replaced in a failover", []*pgdrv1.HistoryEvent{replaced(kindFailoverIntent)}, true},
		{"replaced in a manual failover", []*pgdrv1.HistoryEvent{replaced(kindManualIntent)}, true},
		{"replaced in a switchover", []*pgdrv1.HistoryEvent{replaced(kindSwitchoverIntent)}, true},
		{"another member replaced", []*pgdrv1.HistoryEvent{ev(kindFailoverIntent, "b", "old_primary", "x")}, false},
		{"replaced, then rejoined", []*pgdrv1.HistoryEvent{replaced(kindFailoverIntent), ev(kindRejoin, "m", "result", "ok")}, false},
		{"replaced, then a switchover's last step", []*pgdrv1.HistoryEvent{replaced(kindSwitchoverIntent), ev(kindSwitchoverStep, "m", "result", "ok")}, false},
		{"replaced, rejoin failed", []*pgdrv1.HistoryEvent{replaced(kindFailoverIntent), ev(kindRejoin, "m", "result", "failed")}, true},
		{"replaced, another member rejoined", []*pgdrv1.HistoryEvent{replaced(kindFailoverIntent), ev(kindRejoin, "x", "result", "ok")}, true},
		{"replaced, then followed (still to rejoin)", []*pgdrv1.HistoryEvent{replaced(kindFailoverIntent), ev(kindFollow, "m")}, true},
		{"rejoined, then replaced again", []*pgdrv1.HistoryEvent{ev(kindRejoin, "m", "result", "ok"), replaced(kindFailoverIntent)}, true},
		{"follow order failed", []*pgdrv1.HistoryEvent{followStep("failed")}, true},
		{"follow order failed, then a later one done", []*pgdrv1.HistoryEvent{followStep("failed"), followStep("ok")}, false},
		{"follow order failed, then followed", []*pgdrv1.HistoryEvent{followStep("failed"), ev(kindFollow, "m")}, false},
		{"follow order failed, then rejoined", []*pgdrv1.HistoryEvent{followStep("failed"), ev(kindRejoin, "m", "result", "ok")}, false},
		{"follow order failed, rejoin failed", []*pgdrv1.HistoryEvent{followStep("failed"), ev(kindRejoin, "m", "result", "failed")}, true},
		{"another member's follow order failed", []*pgdrv1.HistoryEvent{ev(kindFailoverStep, "x", "step", stepFollow, "result", "failed")}, false},
		{"both, then rejoined", []*pgdrv1.HistoryEvent{replaced(kindFailoverIntent), followStep("failed"), ev(kindRejoin, "m", "result", "ok")}, false},
		{"both, then followed", []*pgdrv1.HistoryEvent{followStep("failed"), replaced(kindFailoverIntent), ev(kindFollow, "m")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testServer(t, Options{})
			lagCluster(t, s)
			for i, e := range tc.events {
				e.Message = fmt.Sprint(i)
				applyDirect(t, s, pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: e})
			}
			if got := s.stoppedMustRejoin("main", "m"); got != tc.want {
				t.Fatalf("stoppedMustRejoin = %v, want %v", got, tc.want)
			}
		})
	}
}
