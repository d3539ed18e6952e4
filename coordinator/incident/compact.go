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
	out := State{Incidents: make([]Incident, 0, len(st.Incidents)-len(drop)), LastSeq: st.LastSeq}
	for i, in := range st.Incidents {
		if drop[i] {
			c.Dropped = append(c.Dropped, in.ID)
			continue
		}
		in.Timeline = append([]Entry(nil), in.Timeline...)
		c.EntriesDropped += capTimeline(&in, lim.MaxTimeline)
		in.Notes = append([]Note(nil), in.Notes...)
		out.Incidents = append(out.Incidents, in)
	}
	return out, c, nil
}

// capTimeline cuts a timeline longer than max to its first entry (the
// opening) and the newest max-1, counting the cut in TimelineDropped, and
// returns how many entries it removed. The timeline must not be shared.
func capTimeline(in *Incident, max int) int {
	n := len(in.Timeline)
	if n <= max {
		return 0
	}
	cut := n - max
	copy(in.Timeline[1:], in.Timeline[cut+1:])
	in.Timeline = in.Timeline[:max:max]
	in.TimelineDropped += uint64(cut)
	return cut
}
