package restore

import (
	"sync/atomic"

	"github.com/pgdr/pgdr/pkg/pgpage"
)

// pageMask records which pages of a file restored from a chain are
// already written. A chain is applied newest first: the newest copy of a
// page is written, and every older copy of it (in an older delta, or in
// the full backup the chain starts from) is skipped. So each page is
// written once, however long the chain, instead of once per backup that
// holds it. Pages at or beyond the file's final size are never written
// (the file is truncated to that size anyway). The parts of one step are
// applied in parallel; they cover disjoint pages, and the bits are set
// atomically.
type pageMask struct {
	bits  []atomic.Uint64
	limit int64 // the file's final size
}

func newPageMask(size int64) *pageMask {
	pages := (size + pgpage.BlockSize - 1) / pgpage.BlockSize
	return &pageMask{bits: make([]atomic.Uint64, (pages+63)/64), limit: size}
}

// skip reports whether page blk is written already, or lies beyond the
// file's final size.
func (m *pageMask) skip(blk int64) bool {
	if blk*pgpage.BlockSize >= m.limit {
		return true
	}
	return m.bits[blk/64].Load()&(1<<(blk%64)) != 0
}

// set records page blk as written (blk below the final size).
func (m *pageMask) set(blk int64) {
	m.bits[blk/64].Or(1 << (blk % 64))
}

// maskedWriter writes the stream of a whole copy of a file (or of a part
// starting at a page boundary) into the file, leaving out the pages the
// mask skips. Consecutive pages with the same fate make one write. The
// whole copy is the oldest step of a chain, so nothing is applied after
// it and it does not set bits.
type maskedWriter struct {
	k    *kickWriter
	pos  int64 // file offset of the next byte of the stream
	mask *pageMask
}

func (m *maskedWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		skip := m.mask.skip(m.pos / pgpage.BlockSize)
		run := min(int64(len(p)), pgpage.BlockSize-m.pos%pgpage.BlockSize)
		for run < int64(len(p)) && m.mask.skip((m.pos+run)/pgpage.BlockSize) == skip {
			run += min(int64(len(p))-run, pgpage.BlockSize)
		}
		if !skip {
			if err := m.k.writeAt(p[:run], m.pos); err != nil {
				return 0, err
			}
		}
		m.pos += run
		p = p[run:]
	}
	return n, nil
}
