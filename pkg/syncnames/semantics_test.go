package syncnames

import (
	"slices"
	"testing"
)

func TestRequiredAndStates(t *testing.T) {
	ws := []Walsender{
		{Name: "b", State: "streaming", Flush: 300},
		{Name: "a", State: "streaming", Flush: 200},
		{Name: "c", State: "catchup", Flush: 500},
		{Name: "x", State: "streaming", Flush: 900},
	}
	for _, tc := range []struct {
		setting string
		lsn     uint64
		ok      bool
		states  []string
	}{
		{"", ^uint64(0), true, []string{"async", "async", "async", "async"}},
		{`FIRST 1 ("a", "b")`, 200, true, []string{"potential", "sync", "async", "async"}},
		{`FIRST 2 ("a", "b")`, 200, true, []string{"sync", "sync", "async", "async"}},
		{`FIRST 1 ("c", "b")`, 300, true, []string{"sync", "async", "potential", "async"}}, // c is not streaming
		{`FIRST 2 ("c", "b")`, 0, false, []string{"sync", "async", "potential", "async"}},
		{`ANY 1 ("a", "b")`, 300, true, []string{"quorum", "quorum", "async", "async"}},
		{`ANY 2 ("a", "b")`, 200, true, []string{"quorum", "quorum", "async", "async"}},
		{`ANY 3 ("a", "b", "c")`, 0, false, []string{"quorum", "quorum", "quorum", "async"}},
		{`A, B`, 200, true, []string{"potential", "sync", "async", "async"}}, // case-insensitive
		{`ANY 1 (*)`, 900, true, []string{"quorum", "quorum", "quorum", "quorum"}},
	} {
		s, _ := Parse(tc.setting)
		lsn, ok := Required(s, ws)
		if lsn != tc.lsn || ok != tc.ok {
			t.Errorf("Required(%q) = %d, %v; want %d, %v", tc.setting, lsn, ok, tc.lsn, tc.ok)
		}
		if got := States(s, ws); !slices.Equal(got, tc.states) {
			t.Errorf("States(%q) = %v; want %v", tc.setting, got, tc.states)
		}
	}
}
