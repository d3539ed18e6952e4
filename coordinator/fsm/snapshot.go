package fsm

import (
	"bytes"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// snapshotHeader starts every snapshot. A versioned, human-readable first
// line lets Restore refuse a stream from another format (or another
// program) with a clear error instead of misreading it as protobuf, which
// decodes almost anything.
const snapshotHeader = "pgdr-fsm-snapshot v1\n"

// fsmSnapshot is a point-in-time copy of the State. Raft persists it in the
// background while Apply carries on, so it must not share memory with the
// live State.
type fsmSnapshot struct {
	state *pgdrv1.State
}

var _ raft.FSMSnapshot = (*fsmSnapshot)(nil)

// Snapshot implements raft.FSM by cloning the State; the cost is paid here
// under the read lock, and Persist then runs without any lock.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: proto.Clone(f.state).(*pgdrv1.State)}, nil
}

// Persist writes the header and the State to sink, closing it on success
// and cancelling it on failure as raft requires.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.state)
	if err == nil {
		_, err = io.WriteString(sink, snapshotHeader)
	}
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot %s at index %d: %w", sink.ID(), s.state.GetLastIndex(), err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: close snapshot %s at index %d: %w", sink.ID(), s.state.GetLastIndex(), err)
	}
	return nil
}

// Release implements raft.FSMSnapshot; the clone needs no cleanup.
func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM. The new State is fully decoded before it is
// swapped in, so a corrupt snapshot leaves the current State in place.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("fsm: restore: read snapshot: %w", err)
	}
	body, ok := bytes.CutPrefix(data, []byte(snapshotHeader))
	if !ok {
		found := data
		if i := bytes.IndexByte(found, '\n'); i >= 0 {
			found = found[:i+1]
		}
		if len(found) > 64 {
			found = found[:64]
		}
		return fmt.Errorf("fsm: restore: bad snapshot header %q, want %q", found, snapshotHeader)
	}
	st := &pgdrv1.State{}
	if err := proto.Unmarshal(body, st); err != nil {
		return fmt.Errorf("fsm: restore: decode state (%d bytes): %w", len(body), err)
	}
	if st.Clusters == nil {
		st.Clusters = map[string]*pgdrv1.Cluster{}
	}
	if st.Coordinators == nil {
		st.Coordinators = map[string]*pgdrv1.Coordinator{}
	}
	if st.NextSeq == 0 {
		st.NextSeq = 1
	}

	f.mu.Lock()
	f.state = st
	f.latest = nil
	f.indexEvents(st.History)
	f.viewsMu.Lock()
	clear(f.views)
	f.viewsMu.Unlock()
	f.mu.Unlock()
	f.logger.Info("state restored from snapshot",
		"last_index", st.GetLastIndex(), "clusters", len(st.GetClusters()), "history", len(st.GetHistory()))
	return nil
}
