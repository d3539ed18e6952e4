package expire

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestDecideStreamPartials: a stream partial goes once its segment is
// archived, or with the WAL before what retention keeps on its timeline;
// the partial of the segment being written (after the archive) and one of
// a timeline nothing reaches stay; while a backup runs only those of
// archived segments go.
func TestDecideStreamPartials(t *testing.T) {
	in := Input{Backups: []Backup{
		bk("F1", TypeFull, "", day(-3), 1, 2, 3),
		bk("F2", TypeFull, "", day(-2), 1, 5, 6),
	}, WAL: segs(1, 1, 10), Spec: fullRule(1), Now: now,
		Partials: cat(segs(1, 1, 1), segs(1, 3, 3), segs(1, 8, 8), segs(1, 11, 11), segs(7, 2, 2))}
	plan, err := Decide(in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range plan.PartialDelete {
		got[p.Segment] = p.Reason
	}
	want := map[string]string{
		wal.SegmentName(1, 1, seg): "its segment is archived",
		wal.SegmentName(1, 3, seg): "its segment is archived",
		wal.SegmentName(1, 8, seg): "its segment is archived",
	}
	for k, why := range want {
		if !strings.Contains(got[k], why) {
			t.Errorf("partial %s: reason %q, want %q", k, got[k], why)
		}
	}
	if len(got) != len(want) {
		t.Errorf("partials deleted: %v, want %v", got, want)
	}

	// Not archived, before the retained WAL: goes with it.
	in.WAL = segs(1, 5, 10)
	in.Partials = cat(segs(1, 2, 2), segs(1, 11, 11))
	plan, err = Decide(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.PartialDelete) != 1 || plan.PartialDelete[0].Segment != wal.SegmentName(1, 2, seg) || !strings.Contains(plan.PartialDelete[0].Reason, "first needed (backup F2)") {
		t.Fatalf("partial before the retained WAL: %+v", plan.PartialDelete)
	}
	// A backup in progress: only partials of archived segments go.
	in.InProgress = []string{"20261207T110000"}
	in.Partials = cat(segs(1, 2, 2), segs(1, 6, 6))
	plan, err = Decide(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.PartialDelete) != 1 || plan.PartialDelete[0].Segment != wal.SegmentName(1, 6, seg) {
		t.Fatalf("with a backup in progress: %+v", plan.PartialDelete)
	}
}

// TestRunDeletesStreamPartials: a run removes the stream partials of
// archived segments and of segments before the retained WAL, keeps the
// one after the archive's end, and leaves any other key under the stream
// prefix alone.
func TestRunDeletesStreamPartials(t *testing.T) {
	f := newFixture(t, false)
	f.backup("20261201T000000F", TypeFull, "", 72*time.Hour, 2, 3, 5, nil)
	f.backup("20261203T000000F", TypeFull, "", 24*time.Hour, 8, 8, 5, nil)
	f.wal(5, 10)
	part := func(s uint64) string { return repo.StreamPartialKey(cluster, wal.SegmentName(1, s, seg)) }
	for _, s := range []uint64{1, 9, 11} {
		f.put(part(s))
	}
	odd := repo.StreamPrefix(cluster) + "00000001/notes.txt"
	f.put(odd)
	res, err := Run(context.Background(), f.deps(nil), Options{TrustUnsigned: true, Spec: fullRule(1)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].PartialsDeleted != 2 {
		t.Fatalf("stream partials deleted: %d, want 2 (plan %+v)", res[0].PartialsDeleted, res[0].Plan.PartialDelete)
	}
	for s, want := range map[uint64]bool{1: false, 9: false, 11: true} {
		if got := f.exists(part(s)); got != want {
			t.Errorf("partial of segment %d present %v, want %v", s, got, want)
		}
	}
	if !f.exists(odd) {
		t.Error("a key under the stream prefix that is not a partial's was deleted")
	}
}
