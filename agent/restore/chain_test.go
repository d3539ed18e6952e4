package restore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/pgpage"
)

const bs = pgpage.BlockSize

// chainPage is the content of page blk as backup v holds it.
func chainPage(blk int64, v int) []byte {
	p := make([]byte, bs)
	for i := range p {
		p[i] = byte(int64(i)*7 + blk*13 + int64(v)*101)
	}
	binary.BigEndian.PutUint32(p, uint32(blk))
	p[4] = byte(v)
	return p
}

// testChain is a chain of backups of one relation file in a file
// repository (full then deltas, each stored in parts of `parts` pages) and
// what the file held at each backup.
type testChain struct {
	f     *forgedRepo
	ms    []*backup.Manifest
	want  [][]byte // the file after each backup
	parts int64    // part size in pages
}

func (c *testChain) put(t *testing.T, key string, data []byte) backup.Part {
	t.Helper()
	var buf bytes.Buffer
	w, err := objstream.NewWriter(&buf, objstream.Options{Compression: objstream.CompressionZstd, Unencrypted: true, Checksum: objstream.ChecksumBLAKE3, PlainSize: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.f.deps.Repos[0].Store.Put(context.Background(), "main/"+key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatal(err)
	}
	return backup.Part{Object: key, BLAKE3: w.Sum().Hex(), Stored: int64(buf.Len())}
}

func (c *testChain) full(t *testing.T, id string, pages int64) {
	t.Helper()
	file := make([]byte, 0, pages*bs)
	for b := range pages {
		file = append(file, chainPage(b, len(c.ms))...)
	}
	f := backup.File{Path: "16384", Size: int64(len(file)), Mode: 0o600, Kind: backup.KindFull}
	for off := int64(0); off < int64(len(file)); off += c.parts * bs {
		end := min(int64(len(file)), off+c.parts*bs)
		p := c.put(t, fmt.Sprintf("backup/%s/16384.pgdr-part-%d", id, off/(c.parts*bs)), file[off:end])
		p.Offset, p.Size = off, end-off
		f.Parts = append(f.Parts, p)
	}
	c.ms = append(c.ms, &backup.Manifest{ID: id, Type: backup.TypeFull, Files: []backup.File{f}})
	c.want = append(c.want, file)
}

// delta records the pages in changed (the file then has pages pages).
func (c *testChain) delta(t *testing.T, id string, pages int64, changed ...int64) {
	t.Helper()
	v := len(c.ms)
	file := make([]byte, pages*bs)
	copy(file, c.want[v-1])
	sort.Slice(changed, func(i, j int) bool { return changed[i] < changed[j] })
	f := backup.File{Path: "16384", Size: pages * bs, Mode: 0o600, Kind: backup.KindDelta, Pages: len(changed)}
	for off := int64(0); off < pages; off += c.parts {
		var recs []byte
		for _, b := range changed {
			if b >= off && b < off+c.parts && b < pages {
				page := chainPage(b, v)
				copy(file[b*bs:], page)
				recs = binary.BigEndian.AppendUint32(recs, uint32(b))
				recs = append(recs, page...)
			}
		}
		if len(recs) == 0 {
			continue
		}
		p := c.put(t, fmt.Sprintf("backup/%s/16384.pgdr-part-%d", id, off/c.parts), recs)
		p.Offset, p.Size = off*bs, min(c.parts, pages-off)*bs
		f.Parts = append(f.Parts, p)
	}
	c.ms = append(c.ms, &backup.Manifest{ID: id, Type: backup.TypeIncr, Files: []backup.File{f}})
	c.want = append(c.want, file)
}

// restoreFile restores the file of the chain ending at backup last into a
// new directory and returns it and the restore's error.
func (c *testChain) restoreFile(t *testing.T, last int) ([]byte, error) {
	t.Helper()
	plan, err := makePlan(c.ms[:last+1])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w := &writer{d: c.f.deps, r: c.f.deps.Repos[0], root: dir, cluster: "main"}
	defer w.roots.close()
	if err := w.layout(&backup.Manifest{}); err != nil {
		t.Fatal(err)
	}
	if err := w.files(context.Background(), plan, 2); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, "16384"))
}

func newTestChain(t *testing.T) *testChain {
	c := &testChain{f: newForgedRepo(t), parts: 16}
	c.full(t, "20261126T080000F", 40)
	c.delta(t, "20261126T090000I", 40, 1, 2, 3, 17, 30, 35)
	// Every page of the middle incremental is changed again by the next.
	c.delta(t, "20261126T100000I", 40, 2, 3, 17)
	// The file grows (pages 40 to 45, 41 and 43 left as zeros) and a
	// page of the full copy alone is changed.
	c.delta(t, "20261126T110000I", 46, 2, 3, 17, 5, 39, 40, 42, 44, 45)
	// The file shrinks to 37 and a half pages: the last part of the full
	// copy is half cut off.
	c.delta(t, "20261126T120000I", 38, 0, 36, 37)
	c.want[4] = c.want[4][:37*bs+bs/2]
	c.ms[4].Files[0].Size = 37*bs + bs/2
	return c
}

// TestChainRestoreMatchesFull: a file restored from a chain (its middle
// incremental wholly superseded by the next, the file grown and then
// shrunk) is byte for byte the file as the newest backup saw it, and the
// same as a whole copy of it restored alone, at every point of the chain.
func TestChainRestoreMatchesFull(t *testing.T) {
	c := newTestChain(t)
	for last := range c.ms {
		got, err := c.restoreFile(t, last)
		if err != nil {
			t.Fatalf("chain to %s: %v", c.ms[last].ID, err)
		}
		if !bytes.Equal(got, c.want[last]) {
			t.Fatalf("chain to %s: the restored file (%d bytes) differs from the file the backup saw (%d bytes) at byte %d",
				c.ms[last].ID, len(got), len(c.want[last]), firstDiff(got, c.want[last]))
		}
		// A whole copy of the same content, restored alone.
		one := &testChain{f: c.f, parts: 16}
		id := fmt.Sprintf("20261127T0%d0000F", last)
		one.full(t, id, 0)
		f := one.ms[0].Files[0]
		f.Size = int64(len(c.want[last]))
		p := one.put(t, "backup/"+id+"/16384", c.want[last])
		p.Size = f.Size
		f.Parts = []backup.Part{p}
		one.ms[0].Files[0] = f
		whole, err := one.restoreFile(t, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(whole, got) {
			t.Fatalf("chain to %s: differs from the restore of a whole copy of the same data at byte %d", c.ms[last].ID, firstDiff(whole, got))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// damageObject flips a byte in the middle of a stored object.
func damageObject(t *testing.T, c *testChain, key string) {
	t.Helper()
	path := filepath.Join(c.f.base, "repo", "main", filepath.FromSlash(key))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2+10] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestChainRestoreDetectsCorruptObject: a damaged object of the chain
// fails the restore, naming it: one whose pages the restored file needs,
// and also one whose pages newer backups all replace (every object of the
// plan is read to its end and checked: objects are opaque compressed
// streams, so a page is only reached by decoding what precedes it).
func TestChainRestoreDetectsCorruptObject(t *testing.T) {
	for _, c := range []struct {
		name   string
		object func(tc *testChain) string
	}{
		{"needed delta", func(tc *testChain) string { return tc.ms[3].Files[0].Parts[0].Object }},
		{"needed part of the full copy", func(tc *testChain) string { return tc.ms[0].Files[0].Parts[1].Object }},
		{"superseded middle delta", func(tc *testChain) string { return tc.ms[2].Files[0].Parts[0].Object }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tc := newTestChain(t)
			key := c.object(tc)
			damageObject(t, tc, key)
			_, err := tc.restoreFile(t, 4)
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Fatalf("restore with %s damaged: %v, want an error naming it", key, err)
			}
		})
	}
}

// TestChainRestoreChecksManifestChecksum: an intact object that is not the
// one the manifest records (a checksum mismatch) fails the restore.
func TestChainRestoreChecksManifestChecksum(t *testing.T) {
	tc := newTestChain(t)
	tc.ms[2].Files[0].Parts[0].BLAKE3 = strings.Repeat("0", 64)
	_, err := tc.restoreFile(t, 4)
	if err == nil || !strings.Contains(err.Error(), "manifest says") {
		t.Fatalf("restore with a wrong recorded checksum: %v, want a checksum error", err)
	}
}
