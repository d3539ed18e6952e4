package backup

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/objstream"
)

// TestLoadManifestHeader: the header has what the whole manifest has,
// without the file list, and is verified over the whole object (R8).
func TestLoadManifestHeader(t *testing.T) {
	ctx := context.Background()
	r := fileRepos(t, "a")[0]
	path := filepath.Join(t.TempDir(), "signing.key")
	pub, err := objstream.GenerateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := objstream.LoadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Verifier, err = objstream.NewVerifier([]objstream.PublicKey{pub}, false); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	m := &Manifest{Format: ManifestFormat, ID: "20261201T000000I", Type: TypeIncr, Parent: "20261130T000000F", Tier: "daily", Cluster: "main",
		SegmentSize: 16 << 20, StartTime: start, StopTime: start.Add(time.Hour), StartLSN: 100, StopLSN: 200, Timeline: 3}
	for i := range 1000 {
		m.Files = append(m.Files, File{Path: filepath.Join("base", "1", string(rune('a'+i%26))), Size: int64(i)})
	}
	if err := SaveManifest(ctx, r, m, signer); err != nil {
		t.Fatal(err)
	}
	h, err := LoadManifestHeader(ctx, r, "main", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := ManifestHeader{Format: m.Format, ID: m.ID, Type: m.Type, Parent: m.Parent, Tier: m.Tier, Cluster: m.Cluster, SegmentSize: m.SegmentSize,
		StartTime: m.StartTime, StopTime: m.StopTime, StartLSN: m.StartLSN, StopLSN: m.StopLSN, Timeline: m.Timeline, Signed: true}
	if *h != want {
		t.Errorf("header %+v,\nwant %+v", *h, want)
	}
	// A manifest changed after signing fails, as with LoadManifest.
	rc, err := r.Store.Get(ctx, ManifestKey("main", m.ID))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	b[len(b)-10] ^= 0xff
	if err := r.Store.Put(ctx, ManifestKey("main", m.ID), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManifestHeader(ctx, r, "main", m.ID); err == nil {
		t.Error("a manifest changed after signing was read")
	}
}
