package repostat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestManifestLabelsBounded: the type and tier of a manifest become label
// values; whoever can write to the repository (signing not required) can
// store any. A type other than full, diff and incr gives no series of its
// own, and a tier that is not a tier name is counted under other: the
// series stay few and short however many forged manifests there are.
func TestManifestLabelsBounded(t *testing.T) {
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "local", Store: fs}
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 40 {
		start := base.Add(time.Duration(i) * time.Minute)
		m := &backup.Manifest{Format: backup.ManifestFormat, ID: start.Format("20060102T150405") + "F", Type: fmt.Sprintf("forged-%d", i),
			Tier: "daily", Cluster: cluster, StartTime: start, StopTime: start.Add(time.Second), SegmentSize: wal.DefaultSegmentSize, Timeline: 1}
		if i%2 == 1 {
			m.Type, m.Tier = "full", strings.Repeat("Ü", 4096)+fmt.Sprint(i)
		}
		if err := backup.SaveManifest(ctx, r, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The newest manifest's WAL segment size sets where the newest
	// segment ends: a forged one that no server can have is ignored.
	start := base.Add(time.Hour)
	odd := &backup.Manifest{Format: backup.ManifestFormat, ID: start.Format("20060102T150405") + "F", Type: "full", Tier: "daily", Cluster: cluster,
		StartTime: start, StopTime: start.Add(time.Second), SegmentSize: 3, Timeline: 1}
	if err := backup.SaveManifest(ctx, r, odd, nil); err != nil {
		t.Fatal(err)
	}
	put(t, fs, repo.WALKey(cluster, segment(1, 5)))
	rd := New(cluster, []repo.Repo{r}, nil)
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.WALEnd != 6*wal.DefaultSegmentSize {
		t.Errorf("WAL end %d with a manifest's segment size of 3 bytes, want %d", s.WALEnd, 6*wal.DefaultSegmentSize)
	}
	for _, tr := range rd.Snapshots()[0].Tiers {
		if tr.Name != "daily" && tr.Name != OtherTier {
			t.Errorf("tier label %.40q... (%d bytes) from a manifest", tr.Name, len(tr.Name))
		}
		for typ := range tr.Last {
			if typ != backup.TypeFull && typ != backup.TypeDiff && typ != backup.TypeIncr {
				t.Errorf("tier %.20q: type label %q from a manifest", tr.Name, typ)
			}
		}
	}
}
