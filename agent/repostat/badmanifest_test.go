package repostat

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

// getCountingStore counts the objects read.
type getCountingStore struct {
	*filestore.Store
	gets atomic.Int64
}

func (g *getCountingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	g.gets.Add(1)
	return g.Store.Get(ctx, key)
}

// TestDamagedManifestReadOnce: a manifest that cannot be read (truncated,
// forged, unsigned where signing is required) is read once, not again every
// round: a forged manifest can be built to take a long time to decode, and
// the reader runs next to the database. Rewritten, it is read again.
func TestDamagedManifestReadOnce(t *testing.T) {
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &getCountingStore{Store: fs}
	r := repo.Repo{Name: "local", Store: st}
	ctx := context.Background()
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	id := start.Format("20060102T150405") + "F"
	put(t, fs, backup.ManifestKey(cluster, id)) // "x": not a manifest
	rd := New(cluster, []repo.Repo{r}, nil)
	for range 3 {
		rd.ReadOnce(ctx)
	}
	if n := st.gets.Load(); n != 1 {
		t.Errorf("a damaged manifest was read %d times in 3 rounds", n)
	}
	if tiers := rd.Snapshots()[0].Tiers; len(tiers) != 0 {
		t.Fatalf("tiers %+v", tiers)
	}
	// Written again (a repair): read again, and counted.
	time.Sleep(10 * time.Millisecond)
	m := &backup.Manifest{Format: backup.ManifestFormat, ID: id, Type: "full", Tier: "daily", Cluster: cluster,
		StartTime: start, StopTime: start.Add(time.Minute), SegmentSize: wal.DefaultSegmentSize, Timeline: 1,
		Label: strings.Repeat("l", 100)}
	if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
		t.Fatal(err)
	}
	rd.ReadOnce(ctx)
	if tiers := rd.Snapshots()[0].Tiers; len(tiers) != 1 || tiers[0].Backups != 1 {
		t.Fatalf("after the manifest was written again: tiers %+v", tiers)
	}
}
