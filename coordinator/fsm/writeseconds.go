package fsm

import (
	"fmt"
	"time"

	"github.com/pgdr/pgdr/coordinator/slo"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// maxBatchSeconds bounds one RecordWriteSeconds batch: the leader sends
// one per wall-clock minute.
const maxBatchSeconds = 60

// applyRecordWriteSeconds adds one batch of judged seconds to each
// named cluster's buckets (coordinator/slo Apply: gaps no leader judged
// are counted bad and unobserved) and forgets the buckets of clusters
// that no longer exist, so the state stays bounded by the clusters. A
// batch is refused whole if it is malformed; clusters it names that do
// not exist (removed since) are skipped.
func applyRecordWriteSeconds(st *pgdrv1.State, _ *pgdrv1.Command, p *pgdrv1.RecordWriteSeconds, _ uint64) error {
	from, to := p.GetFromUnix(), p.GetToUnix()
	if from <= 0 || to <= from || to-from > maxBatchSeconds || (to-1)/3600 != from/3600 {
		return fmt.Errorf("record write seconds: [%d, %d) is not a batch within one minute of one hour", from, to)
	}
	for _, c := range p.GetClusters() {
		if c.GetFirstUnix() < from || c.GetFirstUnix() > to || int64(c.GetGood())+int64(c.GetBad()) > to-c.GetFirstUnix() || c.GetRunSinceUnix() > c.GetFirstUnix() {
			return fmt.Errorf("record write seconds: cluster %q: %d good and %d bad seconds from %d (run since %d) do not fit in [%d, %d)",
				c.GetCluster(), c.GetGood(), c.GetBad(), c.GetFirstUnix(), c.GetRunSinceUnix(), from, to)
		}
	}
	if st.WriteSeconds == nil {
		st.WriteSeconds = map[string]*pgdrv1.WriteSeconds{}
	}
	for _, c := range p.GetClusters() {
		if _, ok := st.Clusters[c.GetCluster()]; !ok {
			continue
		}
		st.WriteSeconds[c.GetCluster()] = slo.Apply(st.WriteSeconds[c.GetCluster()], from, to,
			slo.Batch{Good: c.GetGood(), Bad: c.GetBad(), First: c.GetFirstUnix(), RunSince: c.GetRunSinceUnix()})
	}
	for name := range st.WriteSeconds {
		if _, ok := st.Clusters[name]; !ok {
			delete(st.WriteSeconds, name)
		}
	}
	return nil
}

// WriteSeconds is one cluster's recorded write-availability seconds.
type WriteSeconds struct {
	// Window: the seconds within the 28-day window ending at now.
	Window slo.Sums
	// Good, Bad, Unobserved: since the cluster was first judged.
	Good, Bad, Unobserved uint64
	// Through: the end of the last recorded second (zero: none).
	Through time.Time
}

// WriteSecondsOf sums cluster's recorded seconds under the read lock,
// without copying its buckets.
func (f *FSM) WriteSecondsOf(cluster string, now time.Time) (WriteSeconds, bool) {
	var out WriteSeconds
	var ok bool
	f.Read(func(st *pgdrv1.State) {
		ws := st.WriteSeconds[cluster]
		if ws == nil {
			return
		}
		ok = true
		out = WriteSeconds{Window: slo.Sum(ws, now), Good: ws.GoodTotal, Bad: ws.BadTotal, Unobserved: ws.UnobservedTotal,
			Through: time.Unix(ws.ThroughUnix, 0)}
	})
	return out, ok
}

// WriteThrough is, per cluster with recorded seconds, the end of its last
// recorded second (Unix seconds): where the leader's next batch starts.
func (f *FSM) WriteThrough() map[string]int64 {
	out := map[string]int64{}
	f.Read(func(st *pgdrv1.State) {
		for name, ws := range st.WriteSeconds {
			out[name] = ws.GetThroughUnix()
		}
	})
	return out
}

// ScanWriteSeconds calls fn for every cluster with recorded seconds,
// under the read lock and without copying: fn must not keep or modify
// the cluster, and must not call back into f.
func (f *FSM) ScanWriteSeconds(now time.Time, fn func(cluster string, ws WriteSeconds, c *pgdrv1.Cluster)) {
	f.Read(func(st *pgdrv1.State) {
		for name, w := range st.WriteSeconds {
			c := st.Clusters[name]
			if c == nil {
				continue
			}
			fn(name, WriteSeconds{Window: slo.Sum(w, now), Good: w.GoodTotal, Bad: w.BadTotal, Unobserved: w.UnobservedTotal,
				Through: time.Unix(w.ThroughUnix, 0)}, c)
		}
	})
}
