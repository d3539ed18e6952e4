package fsm

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DefaultHistoryLimit is how many history events the State keeps when
// Options.HistoryLimit is not set: enough for months of audit trail on a
// busy fleet while keeping snapshots small.
const DefaultHistoryLimit = 10000

// Options tunes an FSM. The zero value is valid.
type Options struct {
	// HistoryLimit is how many history events the State keeps; the excess
	// is dropped after each apply, routine member registrations and updates
	// before decisions (see trimHistory). Seq keeps increasing regardless.
	// Zero or negative means DefaultHistoryLimit.
	HistoryLimit int
}

// FSM is the coordinators' raft.FSM. Apply, Snapshot and Restore are called
// by raft from its FSM goroutine; the read accessors may be called from any
// goroutine at any time, which is why the State sits behind an RWMutex and
// readers only ever get clones.
type FSM struct {
	logger       *slog.Logger
	historyLimit int
	reg          registry

	mu    sync.RWMutex
	state *pgdrv1.State

	// views: the clusters ClusterViews shares (views.go), dropped by Apply
	// and Restore; under viewsMu, taken with mu held.
	viewsMu sync.Mutex
	views   map[string]*pgdrv1.Cluster
	// latest: cluster → kind → its newest event in the history (latest.go);
	// under mu, derived from the history (never snapshotted).
	latest map[string]map[string]*pgdrv1.HistoryEvent
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM holding an empty State. A nil logger uses slog.Default.
func New(logger *slog.Logger, opts Options) *FSM {
	if logger == nil {
		logger = slog.Default()
	}
	limit := opts.HistoryLimit
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	return &FSM{
		logger:       logger.With("component", "fsm"),
		historyLimit: limit,
		reg:          newRegistry(),
		state:        emptyState(),
	}
}

// emptyState is the State before the first command: seq numbering starts at
// 1 so that 0 can mean "from the beginning" in History(afterSeq).
func emptyState() *pgdrv1.State {
	return &pgdrv1.State{
		Clusters:     map[string]*pgdrv1.Cluster{},
		Coordinators: map[string]*pgdrv1.Coordinator{},
		NextSeq:      1,
	}
}

// Apply implements raft.FSM. It always returns a *pgdrv1.ApplyResult; see
// the package documentation for when it panics instead.
func (f *FSM) Apply(l *raft.Log) interface{} {
	var cmd pgdrv1.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		panic(fmt.Sprintf("fsm: cannot decode command envelope at index %d: %v", l.Index, err))
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	// last_index advances for every entry, applied or rejected, so that a
	// snapshot's State always says how far the log was consumed.
	f.state.LastIndex = l.Index

	e, ok := f.reg[cmd.GetType()]
	if !ok {
		if cmd.GetIgnoreIfUnknown() {
			f.logger.Warn("ignoring unknown command type; upgrade this coordinator",
				"index", l.Index, "type", int32(cmd.GetType()), "actor", cmd.GetActor())
			return &pgdrv1.ApplyResult{
				Ok:    false,
				Error: fmt.Sprintf("unknown command type %d ignored", int32(cmd.GetType())),
				Index: l.Index,
			}
		}
		panic(fmt.Sprintf("fsm: unknown command type %d at index %d; upgrade this coordinator",
			int32(cmd.GetType()), l.Index))
	}

	payload := e.new()
	if err := proto.Unmarshal(cmd.GetPayload(), payload); err != nil {
		panic(fmt.Sprintf("fsm: cannot decode %s payload (type %d) at index %d: %v",
			cmd.GetType(), int32(cmd.GetType()), l.Index, err))
	}

	// The views of the cluster the command may change are dropped whether
	// it applies or not (no applier has to be trusted to leave a rejected
	// command's cluster untouched).
	f.dropViews(payload)
	before := len(f.state.History)
	if err := e.apply(f.state, &cmd, payload, l.Index); err != nil {
		f.logger.Info("command rejected",
			"index", l.Index, "type", cmd.GetType().String(), "actor", cmd.GetActor(), "err", err)
		return &pgdrv1.ApplyResult{Ok: false, Error: err.Error(), Index: l.Index}
	}
	if len(f.state.History) > before {
		f.indexEvents(f.state.History[before:])
	}
	f.trimHistory()
	return &pgdrv1.ApplyResult{Ok: true, Index: l.Index}
}

// trimHistory drops events beyond the limit: the oldest routine events
// (member registrations and updates, which agents cause at will) first,
// and the oldest decisions (primary changes, pauses, failover intents,
// steps and results, policy and coordinator changes) only when decisions
// alone exceed the limit, so that noise never evicts a decision. Order is
// kept. The dropped slots are cleared so the backing array does not pin
// them until it is regrown.
func (f *FSM) trimHistory() {
	h := f.state.History
	drop := len(h) - f.historyLimit
	if drop <= 0 {
		return
	}
	out := h[:0]
	for _, ev := range h {
		if drop > 0 && RoutineEvent(ev) {
			drop--
			f.unindexEvent(ev)
			continue
		}
		out = append(out, ev)
	}
	clear(h[len(out):])
	if drop > 0 {
		for _, ev := range out[:drop] {
			f.unindexEvent(ev)
		}
		clear(out[:drop])
		out = out[drop:]
	}
	f.state.History = out
}

// RoutineEvent reports whether ev is routine (a member registered or
// updated) rather than a decision; routine events are evicted from the
// history first.
func RoutineEvent(ev *pgdrv1.HistoryEvent) bool {
	switch ev.GetKind() {
	case KindMemberRegistered, KindMemberUpdated:
		return true
	}
	return false
}

// State returns a deep copy of the whole State.
func (f *FSM) State() *pgdrv1.State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return proto.Clone(f.state).(*pgdrv1.State)
}

// Cluster returns a deep copy of the named cluster.
func (f *FSM) Cluster(name string) (*pgdrv1.Cluster, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c, ok := f.state.Clusters[name]
	if !ok {
		return nil, false
	}
	return proto.Clone(c).(*pgdrv1.Cluster), true
}

// Coordinators returns copies of the coordinator voters sorted by name, so
// that callers (status output, tests) see a stable order.
func (f *FSM) Coordinators() []*pgdrv1.Coordinator {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pgdrv1.Coordinator, 0, len(f.state.Coordinators))
	for _, c := range f.state.Coordinators {
		out = append(out, proto.Clone(c).(*pgdrv1.Coordinator))
	}
	slices.SortFunc(out, func(a, b *pgdrv1.Coordinator) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// History returns copies of the newest limit events with seq > afterSeq,
// oldest first, restricted to cluster unless cluster is "". A limit of zero
// or less means no limit. Returning the newest (not the oldest) events
// matches what an operator asking for "the last 20" expects, and afterSeq
// lets a follower poll for what is new since the last call.
func (f *FSM) History(cluster string, afterSeq uint64, limit int) []*pgdrv1.HistoryEvent {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pgdrv1.HistoryEvent
	h := f.state.History
	for i := len(h) - 1; i >= 0; i-- {
		ev := h[i]
		if ev.GetSeq() <= afterSeq {
			break // history is ordered by seq
		}
		if cluster != "" && ev.GetCluster() != cluster {
			continue
		}
		out = append(out, proto.Clone(ev).(*pgdrv1.HistoryEvent))
		if limit > 0 && len(out) == limit {
			break
		}
	}
	slices.Reverse(out)
	return out
}

// LastIndex returns the Raft index of the last applied entry.
func (f *FSM) LastIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.GetLastIndex()
}

// Read calls fn with the live state under the read lock, without copying
// it: for hot paths (every agent report) that only look. fn must not keep
// or modify anything it is given, and must not call back into f.
func (f *FSM) Read(fn func(st *pgdrv1.State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// MemberEpoch reports whether node is a member of cluster, and the
// cluster's primary and epoch, without copying anything.
func (f *FSM) MemberEpoch(cluster, node string) (ok bool, primary string, epoch uint64) {
	f.Read(func(st *pgdrv1.State) {
		c := st.Clusters[cluster]
		if c == nil {
			return
		}
		_, ok = c.Members[node]
		primary, epoch = c.Primary, c.Epoch
	})
	return ok, primary, epoch
}

// Peers returns the members of cluster other than node, by name, with
// their agent API URLs (the failsafe set a primary must reach).
func (f *FSM) Peers(cluster, node string) []*pgdrv1.FailsafeMember {
	var out []*pgdrv1.FailsafeMember
	f.Read(func(st *pgdrv1.State) {
		for name, m := range st.Clusters[cluster].GetMembers() {
			if name != node {
				out = append(out, &pgdrv1.FailsafeMember{Name: name, ApiUrl: m.GetApiUrl(), FailsafeKey: slices.Clone(m.GetFailsafeKey())})
			}
		}
	})
	slices.SortFunc(out, func(a, b *pgdrv1.FailsafeMember) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ScanHistory calls fn for each history event of cluster ("" = all),
// oldest first, under the read lock and without copying: for the leader's
// periodic checks. fn must not keep or modify the event.
func (f *FSM) ScanHistory(cluster string, fn func(ev *pgdrv1.HistoryEvent)) {
	f.Read(func(st *pgdrv1.State) {
		for _, ev := range st.History {
			if cluster == "" || ev.Cluster == cluster {
				fn(ev)
			}
		}
	})
}

// ScanHistoryBack calls fn for each history event of cluster ("" = all),
// newest first, until fn returns false; same rules as ScanHistory. For
// checks that only need the latest events of some kind.
func (f *FSM) ScanHistoryBack(cluster string, fn func(ev *pgdrv1.HistoryEvent) bool) {
	f.Read(func(st *pgdrv1.State) {
		for i := len(st.History) - 1; i >= 0; i-- {
			if ev := st.History[i]; (cluster == "" || ev.Cluster == cluster) && !fn(ev) {
				return
			}
		}
	})
}

// Clusters returns deep copies of every cluster, without the history (which
// State would copy too): for the leader's periodic checks and status.
func (f *FSM) Clusters() map[string]*pgdrv1.Cluster {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]*pgdrv1.Cluster, len(f.state.Clusters))
	for name, c := range f.state.Clusters {
		out[name] = proto.Clone(c).(*pgdrv1.Cluster)
	}
	return out
}
