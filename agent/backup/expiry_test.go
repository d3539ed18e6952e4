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
