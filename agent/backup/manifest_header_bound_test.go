package backup

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestLoadManifestHeaderBoundedMemory: the agent daemon reads the header
// of every new manifest on its own (agent/repostat, every
// metrics.repo_interval), and whoever can write to the repository (when
// signing is not required) can store a manifest of any size: a few KiB
// of zstd decode to hundreds of MiB of JSON. Reading the header must not
// hold the whole manifest in memory, and a manifest with many files still
// reads.
func TestLoadManifestHeaderBoundedMemory(t *testing.T) {
	ctx := context.Background()
	r := fileRepos(t, "a")[0]
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	forged := &Manifest{Format: ManifestFormat, ID: "20261201T000000F", Type: TypeFull, Cluster: "main", Tier: "daily",
		SegmentSize: 16 << 20, StartTime: start, StopTime: start.Add(time.Hour), Timeline: 1,
		Label: strings.Repeat("a", 64<<20)}
	if err := SaveManifest(ctx, r, forged, nil); err != nil {
		t.Fatal(err)
	}
	forged.Label = ""
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := LoadManifestHeader(ctx, r, "main", forged.ID)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Errorf("reading the header of a manifest with a 64 MiB label allocated %d MiB (err %v)", got>>20, err)
	}

	many := &Manifest{Format: ManifestFormat, ID: "20261202T000000F", Type: TypeFull, Cluster: "main", Tier: "daily",
		SegmentSize: 16 << 20, StartTime: start, StopTime: start.Add(time.Hour), Timeline: 1, BackupLabel: []byte("START WAL LOCATION: 0/2000028\n")}
	for i := range 20000 {
		many.Files = append(many.Files, File{Path: fmt.Sprintf("base/1/%d", i), Size: int64(i), Kind: KindFull, Refs: []string{many.ID},
			Parts: []Part{{Offset: 0, Size: 1, Object: "x", BLAKE3: "00"}}})
	}
	many.Dirs = []Dir{{Path: "base", Mode: 0o700}}
	if err := SaveManifest(ctx, r, many, nil); err != nil {
		t.Fatal(err)
	}
	h, err := LoadManifestHeader(ctx, r, "main", many.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h.ID != many.ID || h.Tier != "daily" || !h.StopTime.Equal(many.StopTime) || h.SegmentSize != 16<<20 {
		t.Errorf("header %+v", h)
	}
}
