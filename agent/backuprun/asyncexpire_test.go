package backuprun

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/expire"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

// The expiry run after a scheduled backup goes on in the sync
// repositories while an async one cannot be read (its region is down), as
// `pgdr-agent expire` does: pins come from the sync repositories, which
// hold them all (before: listing the pins of the async repository failed
// the whole run, so no repository was expired during the outage).
func TestExpirerWithAsyncRepositoryDown(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := filestore.New(filepath.Join(dir, "local"))
	if err != nil {
		t.Fatal(err)
	}
	local := repo.Repo{Name: "local", Store: st}
	downDir := filepath.Join(dir, "dr")
	ds, err := filestore.New(downDir)
	if err != nil {
		t.Fatal(err)
	}
	dr := repo.Repo{Name: "dr", Store: ds, Async: true}
	if err := repo.EnsureClusterInfo(ctx, local, "main", 42); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"20261205T100000F", "20261206T100000F", "20261207T100000F"} {
		at := time.Date(2026, 12, 5+i, 10, 0, 0, 0, time.UTC)
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: backup.TypeFull, Cluster: "main", SegmentSize: 16 << 20, Timeline: 1,
			StartLSN: wal.LSN(uint64(2+4*i) << 24), StopLSN: wal.LSN(uint64(3+4*i) << 24), StartTime: at, StopTime: at.Add(time.Minute)}
		if err := backup.SaveManifest(ctx, local, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The async repository's region goes down.
	os.RemoveAll(downDir)
	os.WriteFile(downDir, []byte("not a directory"), 0o600)
	cfg := &config.Config{Cluster: "main"}
	ex := Expirer(cfg, slog.New(slog.DiscardHandler), true)
	res, err := ex(ctx, []repo.Repo{local, dr}, []repo.Repo{local, dr}, expire.Spec{Types: map[string]expire.Rule{expire.TypeFull: {Count: 1}}})
	deleted := 0
	for _, r := range res {
		if r.Repo == "local" {
			deleted = len(r.Deleted)
		}
	}
	if deleted != 2 {
		t.Fatalf("before: %d backups expired in the sync repository with the async one down (err %v), want 2", deleted, err)
	}
}
