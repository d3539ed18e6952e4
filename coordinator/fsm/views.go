package fsm

import (
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The leader's loops read every cluster several times a second (failover
// judgement every 250 ms, compliance every 2 s) while a command changes
// one cluster now and then. ClusterViews serves them copies made once and
// shared until a command that may change their cluster is applied, instead
// of a deep copy of every cluster (all its members, runs and policies) on
// every call.

// ClusterViews returns every cluster, as Clusters does, but the copies are
// shared between callers and kept until a command that may change their
// cluster is applied: callers must not modify them nor anything they
// hold. A view is never changed once handed out (a change makes a new
// one), so a caller may keep it as a snapshot, like a Clusters copy.
func (f *FSM) ClusterViews() map[string]*pgdrv1.Cluster {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.viewsMu.Lock()
	defer f.viewsMu.Unlock()
	if f.views == nil {
		f.views = map[string]*pgdrv1.Cluster{}
	}
	out := make(map[string]*pgdrv1.Cluster, len(f.state.Clusters))
	for name, c := range f.state.Clusters {
		v, ok := f.views[name]
		if !ok {
			v = proto.Clone(c).(*pgdrv1.Cluster)
			f.views[name] = v
		}
		out[name] = v
	}
	if len(f.views) > len(out) { // clusters gone since (a restore)
		for name := range f.views {
			if _, ok := out[name]; !ok {
				delete(f.views, name)
			}
		}
	}
	return out
}

// dropViews forgets the views a command with payload may have made stale:
// its cluster's, or every one when the command does not name the only
// cluster it can change. The caller holds mu for writing.
func (f *FSM) dropViews(payload proto.Message) {
	f.viewsMu.Lock()
	defer f.viewsMu.Unlock()
	name, one, none := changedCluster(payload)
	switch {
	case none:
	case one:
		delete(f.views, name)
	default:
		clear(f.views)
	}
}

// changedCluster says which cluster a command's applier may change: only
// name (one), none, or any (neither: every view is dropped). A command type
// not listed here drops every view when applied: correct, but it makes the
// leader's loops copy every cluster again; list a new type whose applier
// changes one cluster (or none).
func changedCluster(payload proto.Message) (name string, one, none bool) {
	switch p := payload.(type) {
	case *pgdrv1.RegisterMember:
		return p.GetMember().GetCluster(), true, false
	case *pgdrv1.RecordEvent:
		return p.GetEvent().GetCluster(), true, false
	case *pgdrv1.RemoveMember, *pgdrv1.SetPrimary, *pgdrv1.SetSyncStandbys, *pgdrv1.SetPaused, *pgdrv1.SetPolicy,
		*pgdrv1.RecordPrimaryLSN, *pgdrv1.SetBackupPolicy, *pgdrv1.RecordBackupRun, *pgdrv1.RecordDrillRun:
		return p.(interface{ GetCluster() string }).GetCluster(), true, false
	case *pgdrv1.UpsertCoordinator, *pgdrv1.RemoveCoordinator, *pgdrv1.RecordWriteSeconds:
		return "", false, true
	}
	return "", false, false
}
