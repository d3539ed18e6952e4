package restore

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/pgdr/pgdr/pkg/pgpage"
)

// TestMaskedWriter: the whole copy a chain starts from is written around
// the pages newer backups already wrote and stops at the file's final
// size, whatever the sizes of the writes that carry it.
func TestMaskedWriter(t *testing.T) {
	const bs = pgpage.BlockSize
	final := int64(9*bs + 100) // the file as the newest backup has it
	newer := map[int64]bool{1: true, 4: true, 5: true}
	for _, chunk := range []int{1, 3000, bs, 5 * bs, 12 * bs} {
		fh, err := os.Create(filepath.Join(t.TempDir(), "rel"))
		if err != nil {
			t.Fatal(err)
		}
		mask := newPageMask(final)
		for blk := range newer {
			if mask.skip(blk) {
				t.Fatalf("page %d skipped before it was set", blk)
			}
			mask.set(blk)
			if _, err := fh.WriteAt(bytes.Repeat([]byte{'z'}, bs), blk*bs); err != nil {
				t.Fatal(err)
			}
		}
		var written atomic.Int64
		mw := &maskedWriter{k: &kickWriter{fh: fh, written: &written}, mask: mask}
		base := make([]byte, 12*bs) // the full backup's copy: longer than the final file
		for i := range base {
			base[i] = byte('A' + i/bs)
		}
		for p := base; len(p) > 0; {
			n := min(chunk, len(p))
			if m, err := mw.Write(p[:n]); err != nil || m != n {
				t.Fatalf("chunk %d: Write = %d, %v", chunk, m, err)
			}
			p = p[n:]
		}
		got, err := os.ReadFile(fh.Name())
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 10*bs {
			t.Fatalf("chunk %d: file is %d bytes, want %d (up to the page holding the final size)", chunk, len(got), 10*bs)
		}
		for blk := int64(0); blk < 10; blk++ {
			want := byte('A' + blk)
			if newer[blk] {
				want = 'z'
			}
			if page := got[blk*bs : (blk+1)*bs]; !bytes.Equal(page, bytes.Repeat([]byte{want}, bs)) {
				t.Fatalf("chunk %d: page %d starts %q, want all %q", chunk, blk, page[:4], want)
			}
		}
		if w := written.Load(); w != 7*bs {
			t.Fatalf("chunk %d: %d bytes counted as written, want %d (7 pages)", chunk, w, 7*bs)
		}
	}
}
