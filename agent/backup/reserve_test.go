package backup

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

func fileRepos(t *testing.T, names ...string) []repo.Repo {
	t.Helper()
	var out []repo.Repo
	for _, n := range names {
		st, err := filestore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, repo.Repo{Name: n, Store: st})
	}
	return out
}

// TestReserveIDConcurrent: backups reserving an ID at the same moment, on
// the same clock, each get a stamp of their own in every repository, and a
// stamp a backup already uses is skipped; released, no reservation is
// left.
func TestReserveIDConcurrent(t *testing.T) {
	ctx := context.Background()
	repos := fileRepos(t, "a", "b")
	clock := time.Date(2026, 11, 26, 8, 17, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	// A backup of that second exists in the second repository only.
	if err := repos[1].Store.Put(ctx, "main/backup/20261126T081700I/backup.manifest", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const n = 6
	got := make([]*reservation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = reserveID(ctx, repos, "main", "node", now, log)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, r := range got {
		if errs[i] != nil {
			t.Fatalf("reservation %d: %v", i, errs[i])
		}
		if seen[r.stamp] {
			t.Errorf("stamp %s reserved twice", r.stamp)
		}
		if r.stamp == "20261126T081700" {
			t.Errorf("stamp %s reserved although backup %sI exists", r.stamp, r.stamp)
		}
		seen[r.stamp] = true
		for _, rp := range repos {
			if _, err := rp.Store.Stat(ctx, r.key); err != nil {
				t.Errorf("reservation %s is not in repository %s: %v", r.key, rp.Name, err)
			}
		}
	}
	for _, r := range got {
		r.release(ctx)
	}
	for _, rp := range repos {
		rp.Store.List(ctx, "main/backup/", func(oi storage.ObjectInfo) error {
			if strings.Contains(oi.Key, ".reserved/") {
				t.Errorf("repository %s: %s left after release", rp.Name, oi.Key)
			}
			return nil
		})
	}
}
