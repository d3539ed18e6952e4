package fsm

import (
	"bytes"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// checkViews: ClusterViews equals a fresh deep copy of every cluster, and
// a cluster's view is the one handed out before unless it may have changed.
func checkViews(t *testing.T, step string, f *FSM, before map[string]*pgdrv1.Cluster, changed map[string]bool) map[string]*pgdrv1.Cluster {
	t.Helper()
	views, want := f.ClusterViews(), f.Clusters()
	if len(views) != len(want) {
		t.Fatalf("%s: %d views, want %d clusters", step, len(views), len(want))
	}
	for name, w := range want {
		v := views[name]
		if !proto.Equal(v, w) {
			t.Fatalf("%s: view of %s differs from the state:\ngot  %v\nwant %v", step, name, v, w)
		}
		if old, ok := before[name]; ok && !changed[name] && old != v {
			t.Errorf("%s: view of %s was copied again although no command named it", step, name)
		}
	}
	return views
}

// TestClusterViewsFollowEveryCommand applies commands of every type to two
// clusters (rejected ones too) and compares the views with the state after
// each: a view is replaced exactly when a command named its cluster (every
// view for a command that names none it can change), and a view handed out
// earlier never changes.
func TestClusterViewsFollowEveryCommand(t *testing.T) {
	h := newHarness(t, Options{})
	views := checkViews(t, "empty", h.f, nil, nil)
	type cmd struct {
		typ     pgdrv1.CommandType
		payload proto.Message
		cluster string // "" = no cluster changes
	}
	steps := []cmd{
		{tRegister, member("main", "pg-a1", 42), "main"},
		{tRegister, member("main", "pg-a2", 42), "main"},
		{tRegister, member("other", "pg-b1", 7), "other"},
		{tRegister, member("other", "pg-b2", 7), "other"},
		{tPrimary, &pgdrv1.SetPrimary{Cluster: "main", Name: "pg-a1", Reason: "bootstrap"}, "main"},
		{tPrimary, &pgdrv1.SetPrimary{Cluster: "other", Name: "pg-b1", Reason: "bootstrap"}, "other"},
		{tUpsertCo, &pgdrv1.UpsertCoordinator{Coordinator: &pgdrv1.Coordinator{Name: "c1", Region: "r", RaftAddress: "10.0.0.1:8300"}}, ""},
		{tPaused, &pgdrv1.SetPaused{Cluster: "main", Paused: true, Reason: "upgrade"}, "main"},
		{tPolicy, &pgdrv1.SetPolicy{Cluster: "other", Policy: &pgdrv1.Policy{Synchronous: "on"}}, "other"},
		{pgdrv1.CommandType_COMMAND_TYPE_SET_SYNC_STANDBYS, &pgdrv1.SetSyncStandbys{Cluster: "other", ExpectedEpoch: 1, Names: []string{"pg-b2"}}, "other"},
		{pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "pg-a1", Epoch: 1, Lsn: 1 << 20}, "main"},
		// rejected (not the recorded primary): nothing changes
		{pgdrv1.CommandType_COMMAND_TYPE_RECORD_PRIMARY_LSN, &pgdrv1.RecordPrimaryLSN{Cluster: "main", Primary: "pg-a2", Epoch: 1, Lsn: 2 << 20}, "main"},
		{tRecordEvnt, &pgdrv1.RecordEvent{Event: &pgdrv1.HistoryEvent{Kind: "failover-intent", Cluster: "other", Node: "pg-b1", Epoch: 1},
			Promote: pgdrv1.PromoteMark_PROMOTE_MARK_ORDERED}, "other"},
		{tBackupPolicy, &pgdrv1.SetBackupPolicy{Cluster: "main", Policy: twoTiers()}, "main"},
		{tBackupRun, intent("r1", "daily", "full", "pg-a2"), "main"},
		{tBackupRun, result("r1", RunOK, ""), "main"},
		{tWriteSeconds, writeBatch(hourStart, &pgdrv1.ClusterWriteSeconds{Cluster: "main", Good: 60, FirstUnix: hourStart}), ""},
		{tRemove, &pgdrv1.RemoveMember{Cluster: "other", Name: "pg-b2"}, "other"},
		{tRemoveCo, &pgdrv1.RemoveCoordinator{Name: "c1"}, ""},
	}
	var kept *pgdrv1.Cluster
	var keptCopy *pgdrv1.Cluster
	for i, s := range steps {
		h.apply(s.typ, s.payload)
		views = checkViews(t, s.typ.String(), h.f, views, map[string]bool{s.cluster: true})
		if i == 4 {
			kept, keptCopy = views["main"], proto.Clone(views["main"]).(*pgdrv1.Cluster)
		}
	}
	if !proto.Equal(kept, keptCopy) {
		t.Fatal("a view handed out earlier changed when later commands were applied")
	}

	// A restored snapshot replaces every view, and drops those of clusters
	// it does not hold.
	older := newHarness(t, Options{})
	older.mustApply(tRegister, member("main", "pg-x", 42))
	snap := persist(t, older.f)
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	views = checkViews(t, "restore", h.f, views, map[string]bool{"main": true, "other": true})
	if _, ok := views["other"]; ok {
		t.Fatal("a view of a cluster the restored snapshot does not hold")
	}
	h.f.viewsMu.Lock()
	n := len(h.f.views)
	h.f.viewsMu.Unlock()
	if n != 1 {
		t.Fatalf("%d views kept after the restore, want 1", n)
	}
}

// TestChangedClusterDefaultsToAll: a command type changedCluster does not
// list drops every view (the safe default for a type added later).
func TestChangedClusterDefaultsToAll(t *testing.T) {
	if _, one, none := changedCluster(&pgdrv1.Cluster{Name: "main"}); one || none {
		t.Fatalf("an unlisted payload type: one=%v none=%v, want every view dropped", one, none)
	}
	h := newHarness(t, Options{})
	h.mustApply(tRegister, member("main", "a", 0))
	h.mustApply(tRegister, member("other", "b", 0))
	h.f.ClusterViews()
	h.f.mu.Lock()
	h.f.dropViews(&pgdrv1.Cluster{Name: "main"})
	h.f.mu.Unlock()
	if len(h.f.views) != 0 {
		t.Fatalf("%d views kept, want none", len(h.f.views))
	}
}
