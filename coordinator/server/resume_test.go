package server

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pgdr/pgdr/coordinator/fsm"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestPendingFailover: an intent without a result is pending until its
// result, a later switchover or a later intent; a manual intent keeps its
// kind prefix; other clusters do not count.
func TestPendingFailover(t *testing.T) {
	f := fsm.New(nil, fsm.Options{})
	s := &Server{fsm: f}
	var index uint64
	record := func(cluster, kind, node string, epoch uint64, details map[string]string) {
		t.Helper()
		index++
		c, err := fsm.NewCommand(pgdrv1.CommandType_COMMAND_TYPE_RECORD_EVENT, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{
			Cluster: cluster, Kind: kind, Node: node, Epoch: epoch, Message: kind + " " + node, Details: details,
		}}, "coordinator:test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := f.Apply(&raft.Log{Index: index, Data: b}).(*pgdrv1.ApplyResult); res.GetError() != "" {
			t.Fatalf("apply %s: %s", kind, res.GetError())
		}
	}
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("empty history: pending %+v", p)
	}
	record("main", kindFailoverIntent, "pg-a2", 3, map[string]string{"old_primary": "pg-a1"})
	record("main", kindFailoverStep, "pg-a2", 4, nil)
	p := s.pendingFailover("main")
	if p == nil || p.cand != "pg-a2" || p.old != "pg-a1" || p.epoch != 3 || p.prefix != "" {
		t.Fatalf("after an intent and a step: %+v", p)
	}
	if p := s.pendingFailover("other"); p != nil {
		t.Fatalf("another cluster: %+v", p)
	}
	record("main", kindFailoverResult, "pg-a2", 4, nil)
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("after the result: %+v", p)
	}
	record("main", kindManualIntent, "pg-b1", 4, map[string]string{"old_primary": "pg-a2"})
	if p := s.pendingFailover("main"); p == nil || p.prefix != manualPrefix || p.cand != "pg-b1" {
		t.Fatalf("manual intent: %+v", p)
	}
	record("main", kindSwitchoverIntent, "pg-a1", 5, nil)
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("after a later switchover: %+v", p)
	}
	record("main", kindManualIntent, "pg-b1", 5, map[string]string{"old_primary": "pg-a1"})
	record("main", kindManualResult, "pg-b1", 6, nil)
	if p := s.pendingFailover("main"); p != nil {
		t.Fatalf("after a manual result: %+v", p)
	}
}
