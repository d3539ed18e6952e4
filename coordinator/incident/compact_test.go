package incident

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCompact(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxResolved = 2
	lim.MaxResolvedAge = 24 * time.Hour
	lim.MaxTimeline = 3
	var st State
	for i := uint64(1); i <= 5; i++ {
		st, _, _ = Observe(st, sig(i, fmt.Sprintf("k%d", i), "x"), lim, t0)
	}
	// INC-1 resolved two days ago, INC-2..4 resolved recently (oldest first), INC-5 open.
	now := t0.Add(72 * time.Hour)
	st, _ = Resolve(st, "INC-1", "a", "n", lim, t0.Add(time.Hour))
	st, _ = Resolve(st, "INC-2", "a", "n", lim, now.Add(-3*time.Hour))
	st, _ = Resolve(st, "INC-3", "a", "n", lim, now.Add(-2*time.Hour))
	st, _ = Resolve(st, "INC-4", "a", "n", lim, now.Add(-1*time.Hour))
	// INC-5 gets a long timeline.
	for i := 0; i < 6; i++ {
		st, _, _ = Observe(st, sig(100+uint64(i), "k5", fmt.Sprintf("m%d", i)), lim, t0.Add(time.Duration(i)*time.Minute))
	}
	before := st.Clone()
	got, c, err := Compact(st, lim, now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range got.Incidents {
		ids = append(ids, in.ID)
	}
	if want := []string{"INC-3", "INC-4", "INC-5"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("kept %v, want %v", ids, want)
	}
	if want := []string{"INC-1", "INC-2"}; !reflect.DeepEqual(c.Dropped, want) {
		t.Fatalf("dropped %v, want %v", c.Dropped, want)
	}
	tl := got.Incidents[2].Timeline
	if len(tl) != 3 || tl[0].Kind != KindOpened || tl[2].Message != "m5" || tl[1].Message != "m4" || got.Incidents[2].TimelineDropped != 4 {
		t.Fatalf("timeline %+v dropped %d; want the first and the two newest, 4 dropped", tl, got.Incidents[2].TimelineDropped)
	}
	if !reflect.DeepEqual(st, before) {
		t.Fatalf("Compact modified its input state")
	}
	again, c2, _ := Compact(got, lim, now)
	if !reflect.DeepEqual(again, got) || len(c2.Dropped) != 0 || c2.EntriesDropped != 0 {
		t.Fatalf("second Compact changed the state: %+v", c2)
	}
}

func TestCompactNeverDropsActive(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxResolved = 0
	var st State
	st, _, _ = Observe(st, sig(1, "a", "x"), lim, t0)
	st, _, _ = Observe(st, sig(2, "b", "x"), lim, t0)
	st, _ = Ack(st, "INC-2", "alice", "", lim, t0)
	got, c, _ := Compact(st, lim, t0.Add(365*24*time.Hour))
	if len(got.Incidents) != 2 || len(c.Dropped) != 0 {
		t.Fatalf("dropped active incidents: %v", c.Dropped)
	}
}

func TestCompactRefusesBadLimits(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxTimeline = 1
	st, _, _ := Observe(State{}, sig(1, "a", "x"), DefaultLimits(), t0)
	got, _, err := Compact(st, lim, t0)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "max_timeline") || !reflect.DeepEqual(got, st) {
		t.Fatalf("err = %v, want ErrInvalid naming max_timeline and the state unchanged", err)
	}
}
