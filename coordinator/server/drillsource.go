package server

import (
	"math"

	"github.com/pgdr/pgdr/coordinator/compliance"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// fsmDrills is the DrillSource of the recorded restore drills: a
// cluster's RTO evidence is its newest passed drill's restore time (fetch
// and write plus WAL replay: what a real restore of that backup takes
// before the database is usable; the checks are the drill's own).
type fsmDrills struct{ s *Server }

func (d fsmDrills) LastDrill(cluster string) compliance.Duration {
	// Read in place (compliance asks for every cluster every 2 s): a copy
	// of the cluster would copy all its members for its drill runs.
	var out compliance.Duration
	d.s.fsm.Read(func(st *pgdrv1.State) { out = lastDrillOf(st.GetClusters()[cluster].GetDrillRuns()) })
	return out
}

// lastDrillOf is the newest passed drill of runs (runs are in start order)
// with a possible restore time: the timings are the agent's report, and a
// negative or non-finite one (a broken or forged agent) is no evidence.
func lastDrillOf(runs []*pgdrv1.DrillRun) compliance.Duration {
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		if r.GetResult() != "ok" || !r.GetReport().GetOk() || r.GetFinishedAt() == nil {
			continue
		}
		t := r.GetReport().GetTimings()
		fw, replay := t.GetFetchWrite(), t.GetReplay()
		sec := fw + replay
		if fw < 0 || replay < 0 || math.IsNaN(sec) || math.IsInf(sec, 0) {
			continue
		}
		return compliance.Duration{Recorded: true, Source: compliance.SourceDrill, Seconds: sec, At: r.GetFinishedAt().AsTime()}
	}
	return compliance.Duration{}
}
