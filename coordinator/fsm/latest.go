package fsm

import (
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The leader asks, for every cluster several times a second, which is the
// newest event of a few kinds (an unfinished failover's intent, the last
// failover): a backward scan of a history of thousands of events per
// cluster per question. The FSM keeps, per cluster and kind, a pointer to
// the newest event instead: set as events are appended, removed when
// compaction drops that event (it then drops every older event of the kind
// too: compaction takes the oldest routine events, then the oldest
// decisions, and a kind is either routine or not), rebuilt from the
// history on Restore. It is derived state, the same on every coordinator,
// so a new leader has it at once.

// indexEvents records evs (in history order) as their kind's newest. The
// caller holds mu for writing.
func (f *FSM) indexEvents(evs []*pgdrv1.HistoryEvent) {
	if f.latest == nil {
		f.latest = map[string]map[string]*pgdrv1.HistoryEvent{}
	}
	for _, ev := range evs {
		kinds := f.latest[ev.GetCluster()]
		if kinds == nil {
			kinds = map[string]*pgdrv1.HistoryEvent{}
			f.latest[ev.GetCluster()] = kinds
		}
		kinds[ev.GetKind()] = ev
	}
}

// unindexEvent forgets ev, which compaction drops, if it is its kind's
// newest. The caller holds mu for writing.
func (f *FSM) unindexEvent(ev *pgdrv1.HistoryEvent) {
	kinds := f.latest[ev.GetCluster()]
	if kinds[ev.GetKind()] != ev {
		return
	}
	delete(kinds, ev.GetKind())
	if len(kinds) == 0 {
		delete(f.latest, ev.GetCluster())
	}
}

// LatestEvent returns a copy of cluster's ("" = any cluster's) newest
// history event whose kind is one of kinds (nil when there is none): what
// ScanHistoryBack stopping at the first of those kinds finds, without the
// scan.
func (f *FSM) LatestEvent(cluster string, kinds ...string) *pgdrv1.HistoryEvent {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var newest *pgdrv1.HistoryEvent
	of := func(byKind map[string]*pgdrv1.HistoryEvent) {
		for _, k := range kinds {
			if ev := byKind[k]; ev != nil && (newest == nil || ev.GetSeq() > newest.GetSeq()) {
				newest = ev
			}
		}
	}
	if cluster != "" {
		of(f.latest[cluster])
	} else {
		for _, byKind := range f.latest {
			of(byKind)
		}
	}
	if newest == nil {
		return nil
	}
	return proto.Clone(newest).(*pgdrv1.HistoryEvent)
}
