package expire

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/divergenceid"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestDecideDivergence: the newest DivergenceKeep reports stay whatever
// their age, and every report younger than the PITR window or
// DivergenceMinAge; the others go; what is not a report id stays.
func TestDecideDivergence(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	old := func(n int, age time.Duration) []string {
		var ids []string
		for i := range n {
			ids = append(ids, divergenceid.New(fmt.Sprintf("pg-a%d", i), now.Add(-age-time.Duration(i)*time.Hour)))
		}
		return ids
	}
	for _, tc := range []struct {
		name   string
		ids    []string
		window time.Duration
		want   int
	}{
		{"#1 a few old ones: kept (the newest 10)", old(5, 400*day), 0, 0},
		{"#2 15 old ones: 5 go", old(15, 400*day), 0, 5},
		{"#3 15 younger than the minimum age: kept", old(15, 10*day), 0, 0},
		{"#4 15 within the PITR window: kept", old(15, 60*day), 90 * day, 0},
		{"#5 15 past the PITR window: 5 go", old(15, 100*day), 90 * day, 5},
		{"#6 not report ids: kept", append(old(12, 400*day), "junk", "20200101T000000Z"), 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := decideDivergence(tc.ids, now, tc.window)
			if len(got) != tc.want {
				t.Fatalf("deleted %d (%v), want %d", len(got), got, tc.want)
			}
			for _, id := range got {
				if !slices.Contains(tc.ids, id) || divergenceid.Check(id) != nil {
					t.Errorf("deleted %q", id)
				}
			}
			if tc.want > 0 && tc.name[:2] != "#6" && !slices.Contains(got, tc.ids[len(tc.ids)-1]) {
				t.Errorf("the oldest %s is kept: %v", tc.ids[len(tc.ids)-1], got)
			}
		})
	}
}

// TestRunExpiresDivergence: a run deletes the divergence reports retention
// does not keep (report and raw WAL), a dry run lists them only.
func TestRunExpiresDivergence(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 8, 8, 5, nil)
	f.wal(8, 10)
	ctx := context.Background()
	var rids []string
	for i := range 12 {
		id := divergenceid.New("pg-a1", time.Now().Add(-400*24*time.Hour-time.Duration(i)*time.Hour))
		rids = append(rids, id)
		for _, k := range []string{repo.DivergenceReportKey(cluster, id), repo.DivergenceWALKey(cluster, id, wal.SegmentName(1, 3, seg))} {
			if err := f.r.Store.Put(ctx, k, strings.NewReader("x"), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	o := Options{TrustUnsigned: true, Spec: fullRule(1), DryRun: true}
	res, err := Run(ctx, f.deps(nil), o)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{rids[11], rids[10]} // the oldest two, sorted
	if !slices.Equal(res[0].DivergenceDeleted, want) || !f.exists(repo.DivergenceReportKey(cluster, rids[11])) {
		t.Fatalf("dry run: would delete %v, want %v", res[0].DivergenceDeleted, want)
	}
	o.DryRun = false
	if res, err = Run(ctx, f.deps(nil), o); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].DivergenceDeleted, want) {
		t.Errorf("deleted %v, want %v", res[0].DivergenceDeleted, want)
	}
	for i, id := range rids {
		for _, k := range []string{repo.DivergenceReportKey(cluster, id), repo.DivergenceWALKey(cluster, id, wal.SegmentName(1, 3, seg))} {
			if got := f.exists(k); got != (i < 10) {
				t.Errorf("%s present %v", k, got)
			}
		}
	}
	f.consistent()
}
