package incident

import (
	"sort"
	"time"
)

// Compaction says what Compact removed.
type Compaction struct {
	// Dropped are the ids of the resolved incidents removed, in state order.
	Dropped []string
	// EntriesDropped counts the timeline entries removed.
	EntriesDropped int
}

// Compact keeps the state bounded (rule 5): it drops resolved incidents
// resolved longer than lim.MaxResolvedAge ago and then the oldest resolved
// beyond lim.MaxResolved, never an open or acknowledged one, and cuts every
// timeline longer than lim.MaxTimeline to its first entry (the opening) and
// the newest ones, counting the cut in TimelineDropped. Compacting a
// compacted state at the same now changes nothing. Invalid limits are
// refused and change nothing.
func Compact(st State, lim Limits, now time.Time) (State, Compaction, error) {
	if err := lim.Validate(); err != nil {
		return st, Compaction{}, err
	}
	drop := make(map[int]bool)
	var resolved []int // indexes of the resolved incidents kept by age
	for i, in := range st.Incidents {
		if in.Active() {
			continue
		}
		if now.Sub(in.Resolved) > lim.MaxResolvedAge {
			drop[i] = true
			continue
		}
		resolved = append(resolved, i)
	}
	if extra := len(resolved) - lim.MaxResolved; extra > 0 {
		sort.SliceStable(resolved, func(a, b int) bool {
			ra, rb := st.Incidents[resolved[a]], st.Incidents[resolved[b]]
			if !ra.Resolved.Equal(rb.Resolved) {
				return ra.Resolved.Before(rb.Resolved)
			}
			return ra.Seq < rb.Seq
		})
		for _, i := range resolved[:extra] {
			drop[i] = true
		}
	}
	var c Compaction
	out := State{Incidents: make([]Incident, 0, len(st.Incidents)-len(drop))}
	for i, in := range st.Incidents {
		if drop[i] {
			c.Dropped = append(c.Dropped, in.ID)
			continue
		}
		if n := len(in.Timeline); n > lim.MaxTimeline {
			cut := n - lim.MaxTimeline
			tl := make([]Entry, 0, lim.MaxTimeline)
			tl = append(tl, in.Timeline[0])
			in.Timeline = append(tl, in.Timeline[cut+1:]...)
			in.TimelineDropped += uint64(cut)
			c.EntriesDropped += cut
		} else {
			in.Timeline = append([]Entry(nil), in.Timeline...)
		}
		in.Notes = append([]Note(nil), in.Notes...)
		out.Incidents = append(out.Incidents, in)
	}
	return out, c, nil
}
