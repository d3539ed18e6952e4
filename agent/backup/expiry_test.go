package backup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestReservationKeptFresh: a running backup rewrites its reservation, so
// its ModTime (the store's clock, what expiry judges) stays recent (R7).
func TestReservationKeptFresh(t *testing.T) {
	ctx := context.Background()
	repos := fileRepos(t, "a", "b")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := reserveID(ctx, repos, "main", "n1", time.Now, log)
	if err != nil {
		t.Fatal(err)
	}
	defer r.release(ctx)
	first, err := repos[1].Store.Stat(ctx, r.key)
	if err != nil {
		t.Fatal(err)
	}
	stop := r.keepFresh(ctx, 20*time.Millisecond, log)
	testutil.WaitFor(t, 30*time.Second, "the reservation to be rewritten", func() (bool, error) {
		oi, err := repos[1].Store.Stat(ctx, r.key)
		if err != nil {
			return false, err
		}
		return oi.ModTime.After(first.ModTime), errors.New("ModTime unchanged")
	})
	stop()
	if oi, err := repos[0].Store.Stat(ctx, r.key); err != nil || !oi.ModTime.After(first.ModTime) {
		t.Fatalf("repository a: %v %v", oi, err)
	}
}

// TestClaimParent: a backup claiming a parent that expiry marked as being
// deleted is refused and leaves no record; otherwise its record stays.
func TestClaimParent(t *testing.T) {
	ctx := context.Background()
	repos := fileRepos(t, "a", "b")
	m := &Manifest{Format: ManifestFormat, ID: "20261201T000000F", Type: TypeFull, Cluster: "main", SegmentSize: 16 << 20, Timeline: 1}
	for _, r := range repos {
		if err := SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := repos[1].Store.Put(ctx, DeletingKey("main", m.ID), strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	err := ClaimParent(ctx, repos, "main", m.ID, "20261202T000000I")
	if !errors.Is(err, ErrParentExpiring) {
		t.Fatalf("claim on a parent being deleted: %v", err)
	}
	for _, r := range repos {
		if _, err := r.Store.Stat(ctx, ChildKey("main", m.ID, "20261202T000000I")); err == nil {
			t.Errorf("repository %s: the refused claim's record is left", r.Name)
		}
	}
	if err := repos[1].Store.Delete(ctx, DeletingKey("main", m.ID)); err != nil {
		t.Fatal(err)
	}
	if err := ClaimParent(ctx, repos, "main", m.ID, "20261202T000000I"); err != nil {
		t.Fatal(err)
	}
	for _, r := range repos {
		if _, err := r.Store.Stat(ctx, ChildKey("main", m.ID, "20261202T000000I")); err != nil {
			t.Errorf("repository %s: no child record: %v", r.Name, err)
		}
	}
	// A parent gone is refused too.
	if err := ClaimParent(ctx, repos, "main", "20261130T000000F", "20261202T000000I"); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("claim on a missing parent: %v", err)
	}
}

// TestParentCandidatesSkipMarked: a backup with an expiry marker (an
// interrupted expire's, say) is no parent: the backup builds on an older
// one, or is taken full, with the marker named in the reason, instead of
// failing after uploading everything.
func TestParentCandidatesSkipMarked(t *testing.T) {
	ctx := context.Background()
	repos := fileRepos(t, "a", "b")
	srv := &server{sysid: 7}
	for _, id := range []string{"20261201T000000F", "20261202T000000F"} {
		m := &Manifest{Format: ManifestFormat, ID: id, Type: TypeFull, Cluster: "main", SystemIdentifier: 7, SegmentSize: 16 << 20, Timeline: 1}
		for _, r := range repos {
			if err := SaveManifest(ctx, r, m, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	mark := func(id string) {
		if err := repos[1].Store.Put(ctx, DeletingKey("main", id), strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	mark("20261202T000000F")
	cands, _, err := parentCandidates(ctx, repos, "main", TypeIncr, srv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 1 || cands[0].ID != "20261201T000000F" {
		t.Fatalf("candidates with the newest marked: %v, want only 20261201T000000F", ids(cands))
	}
	mark("20261201T000000F")
	cands, reason, err := parentCandidates(ctx, repos, "main", TypeDiff, srv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 0 || !strings.Contains(reason, DeletingKey("main", "20261202T000000F")) || !strings.Contains(reason, "pgdr-agent expire") {
		t.Fatalf("every candidate marked: %v, reason %q: want none, the marker and how to clear it named", ids(cands), reason)
	}
	// When it happens anyway (marked after the choice), the error names
	// the marker, its age and what clears it.
	err = ClaimParent(ctx, repos, "main", "20261202T000000F", "20261203T000000I")
	if !errors.Is(err, ErrParentExpiring) || !strings.Contains(err.Error(), DeletingKey("main", "20261202T000000F")) ||
		!strings.Contains(err.Error(), "ago") || !strings.Contains(err.Error(), "pgdr-agent expire") {
		t.Fatalf("claim on a marked parent: %v", err)
	}
}

func ids(ms []*Manifest) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}
