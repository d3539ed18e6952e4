package syncnames

import (
	"slices"
	"strings"
)

// Walsender is one row of pg_stat_replication as the semantics need it.
type Walsender struct {
	Name  string // application_name
	State string // "streaming", "catchup", ...
	Flush uint64 // flush_lsn; 0 when not reported yet
}

// priority is the 1-based position of the first name of s matching name
// (PostgreSQL compares case-insensitively; "*" matches every name), 0
// when none does: the walsender is asynchronous.
func (s Setting) priority(name string) int {
	for i, n := range s.Names {
		if n == "*" || strings.EqualFold(n, name) {
			return i + 1
		}
	}
	return 0
}

// candidates are the walsenders PostgreSQL 15 may count for a commit
// (SyncRepGetCandidateStandbys): streaming, with a flush position, named
// in s; indexes into ws, by priority (list order) then position in ws.
func (s Setting) candidates(ws []Walsender) []int {
	var out []int
	for i, w := range ws {
		if w.State == "streaming" && w.Flush != 0 && s.priority(w.Name) > 0 {
			out = append(out, i)
		}
	}
	slices.SortStableFunc(out, func(a, b int) int { return s.priority(ws[a].Name) - s.priority(ws[b].Name) })
	return out
}

// Required is the highest LSN a commit may be released at under s, given
// the walsenders ws: for FIRST n, the lowest flush among the n
// highest-priority candidates; for ANY n, the n-th highest flush among
// all candidates. ok is false when fewer than n candidates are connected
// (commits wait). A zero Setting (asynchronous) requires nothing: ok
// with max uint64.
func Required(s Setting, ws []Walsender) (lsn uint64, ok bool) {
	if len(s.Names) == 0 {
		return ^uint64(0), true
	}
	c := s.candidates(ws)
	if s.Num < 1 || len(c) < s.Num {
		return 0, false
	}
	if strings.EqualFold(s.Method, "ANY") {
		fl := make([]uint64, len(c))
		for i, idx := range c {
			fl[i] = ws[idx].Flush
		}
		slices.Sort(fl)
		slices.Reverse(fl)
		return fl[s.Num-1], true
	}
	lsn = ^uint64(0)
	for _, idx := range c[:s.Num] {
		lsn = min(lsn, ws[idx].Flush)
	}
	return lsn, true
}

// States is pg_stat_replication's sync_state for each of ws under s, as
// PostgreSQL 15 shows it: "sync" for the FIRST n chosen, "potential" for
// the other named ones, "quorum" for every named one under ANY, "async"
// for the rest.
func States(s Setting, ws []Walsender) []string {
	out := make([]string, len(ws))
	chosen := map[int]bool{}
	if !strings.EqualFold(s.Method, "ANY") {
		c := s.candidates(ws)
		for _, idx := range c[:min(max(s.Num, 0), len(c))] {
			chosen[idx] = true
		}
	}
	for i, w := range ws {
		switch {
		case len(s.Names) == 0 || s.priority(w.Name) == 0:
			out[i] = "async"
		case strings.EqualFold(s.Method, "ANY"):
			out[i] = "quorum"
		case chosen[i]:
			out[i] = "sync"
		default:
			out[i] = "potential"
		}
	}
	return out
}
