package pgpage

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// BlockSize is PostgreSQL's default (and pgdr's only supported) BLCKSZ.
const BlockSize = 8192

// RelSegSize is RELSEG_SIZE: the blocks in each 1 GiB relation segment file.
const RelSegSize = 131072

// HeaderSize is the size of PageHeaderData up to pd_linp (SizeOfPageHeaderData).
const HeaderSize = 24

// Header is a page's PageHeaderData, without the line pointer array.
type Header struct {
	LSN             uint64 // pd_lsn: WAL position just past the page's last change
	Checksum        uint16 // pd_checksum
	Flags           uint16 // pd_flags
	Lower           uint16 // pd_lower: start of free space
	Upper           uint16 // pd_upper: end of free space; 0 on a new page
	Special         uint16 // pd_special: start of the access method's special space
	PageSizeVersion uint16 // pd_pagesize_version: page size | layout version
	PruneXID        uint32 // pd_prune_xid
}

// PageSize is the page size recorded in the header (high byte of
// pd_pagesize_version).
func (h Header) PageSize() int { return int(h.PageSizeVersion & 0xFF00) }

// Version is the page layout version (4 since PostgreSQL 8.3).
func (h Header) Version() int { return int(h.PageSizeVersion & 0x00FF) }

// ParseHeader decodes the first HeaderSize bytes of page (it panics on a
// shorter slice). Layout (little-endian): pd_lsn {xlogid u32, xrecoff u32},
// pd_checksum u16, pd_flags u16, pd_lower u16, pd_upper u16, pd_special u16,
// pd_pagesize_version u16, pd_prune_xid u32.
func ParseHeader(page []byte) Header {
	_ = page[HeaderSize-1]
	le := binary.LittleEndian
	return Header{
		// pd_lsn is two uint32s, not one uint64, so the halves are swapped
		// relative to a little-endian uint64 read.
		LSN:             uint64(le.Uint32(page[0:]))<<32 | uint64(le.Uint32(page[4:])),
		Checksum:        le.Uint16(page[8:]),
		Flags:           le.Uint16(page[10:]),
		Lower:           le.Uint16(page[12:]),
		Upper:           le.Uint16(page[14:]),
		Special:         le.Uint16(page[16:]),
		PageSizeVersion: le.Uint16(page[18:]),
		PruneXID:        le.Uint32(page[20:]),
	}
}

// IsNew reports PageIsNew: pd_upper is zero, as on a page that was extended
// into the file but never initialized (normally all zeros). PostgreSQL does
// not checksum such pages. It panics if page is shorter than HeaderSize.
func IsNew(page []byte) bool {
	_ = page[15]
	return page[14] == 0 && page[15] == 0
}

// IsZero reports whether every byte of page is zero.
func IsZero(page []byte) bool {
	// OR 64 bytes at a time as eight words: one branch per cache line, and
	// most non-zero pages exit in the first line (the header).
	for len(page) >= 64 {
		w := page[:64:64]
		le := binary.LittleEndian
		if le.Uint64(w[0:])|le.Uint64(w[8:])|le.Uint64(w[16:])|le.Uint64(w[24:])|
			le.Uint64(w[32:])|le.Uint64(w[40:])|le.Uint64(w[48:])|le.Uint64(w[56:]) != 0 {
			return false
		}
		page = page[64:]
	}
	for _, b := range page {
		if b != 0 {
			return false
		}
	}
	return true
}

// checksumBaseOffsets are the initial values of PostgreSQL's 32 parallel
// FNV-1a sums (checksumBaseOffsets in storage/checksum_impl.h). They are part
// of the on-disk format. Never written.
var checksumBaseOffsets = [nSums]uint32{
	0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
	0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
	0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
	0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
	0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
	0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
	0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
	0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
}

const (
	nSums    = 32        // N_SUMS: parallel sums, fixed by the format
	fnvPrime = 16777619  // FNV_PRIME
	rowBytes = nSums * 4 // one uint32 for each sum
	rows     = BlockSize / rowBytes
	group    = 8         // sums computed together (see Checksum)
	groupLen = group * 4 // bytes of a row one group consumes
)

// Checksum computes PostgreSQL's data checksum (pg_checksum_page) of the
// first BlockSize bytes of page (it panics if page is shorter) at block number blkno
// of its relation fork; see RelFile.BlockNumber. pd_checksum is taken as zero,
// and page is not modified.
//
// The algorithm views the page as 64 rows of 32 uint32s and runs a modified
// FNV-1a, sum = (sum^v)*FNV_PRIME ^ (sum^v)>>17, down each of the 32 columns
// from its own base offset, mixes in two zero words, xors the 32 sums, xors
// blkno, and reduces to (x % 65535) + 1.
func Checksum(page []byte, blkno uint32) uint16 {
	p := (*[BlockSize]byte)(page)
	// The columns are independent, so rather than PostgreSQL's row-by-row
	// order (which relies on SIMD) we run eight columns at a time from top
	// to bottom: eight independent multiply chains hide the multiply
	// latency, and eight sums stay in registers where 32 would spill.
	var x uint32
	for g := 0; g < nSums; g += group {
		x ^= checksumGroup(p, g)
	}
	x ^= blkno
	return uint16(x%65535 + 1)
}

// checksumGroup returns the xor of the finished sums of columns g..g+7.
func checksumGroup(p *[BlockSize]byte, g int) uint32 {
	le := binary.LittleEndian
	b := checksumBaseOffsets[g : g+group : g+group]
	s0, s1, s2, s3, s4, s5, s6, s7 := b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
	for r := 0; r < rows; r++ {
		off := r*rowBytes + g*4
		w := p[off : off+groupLen : off+groupLen]
		v2 := le.Uint32(w[8:])
		if off == 0 {
			// Row 0, column 2 is pd_checksum (low half, little-endian) and
			// pd_flags: the checksum is computed as if pd_checksum were 0.
			v2 &^= 0xFFFF
		}
		t0 := s0 ^ le.Uint32(w[0:])
		t1 := s1 ^ le.Uint32(w[4:])
		t2 := s2 ^ v2
		t3 := s3 ^ le.Uint32(w[12:])
		t4 := s4 ^ le.Uint32(w[16:])
		t5 := s5 ^ le.Uint32(w[20:])
		t6 := s6 ^ le.Uint32(w[24:])
		t7 := s7 ^ le.Uint32(w[28:])
		s0 = t0*fnvPrime ^ t0>>17
		s1 = t1*fnvPrime ^ t1>>17
		s2 = t2*fnvPrime ^ t2>>17
		s3 = t3*fnvPrime ^ t3>>17
		s4 = t4*fnvPrime ^ t4>>17
		s5 = t5*fnvPrime ^ t5>>17
		s6 = t6*fnvPrime ^ t6>>17
		s7 = t7*fnvPrime ^ t7>>17
	}
	// Two rounds with value 0 mix the last word's high bits downwards.
	for range 2 {
		s0 = s0*fnvPrime ^ s0>>17
		s1 = s1*fnvPrime ^ s1>>17
		s2 = s2*fnvPrime ^ s2>>17
		s3 = s3*fnvPrime ^ s3>>17
		s4 = s4*fnvPrime ^ s4>>17
		s5 = s5*fnvPrime ^ s5>>17
		s6 = s6*fnvPrime ^ s6>>17
		s7 = s7*fnvPrime ^ s7>>17
	}
	return s0 ^ s1 ^ s2 ^ s3 ^ s4 ^ s5 ^ s6 ^ s7
}

var (
	// ErrChecksum means a page's stored checksum does not match its contents.
	ErrChecksum = errors.New("page checksum mismatch")
	// ErrNewNotZero means a page looks new (pd_upper is 0) but is not all
	// zeros: PostgreSQL would refuse it as an invalid page.
	ErrNewNotZero = errors.New("new page (pd_upper = 0) is not all zeros")
	// ErrPageSize means the buffer is not exactly BlockSize bytes.
	ErrPageSize = errors.New("page is not BlockSize bytes")
)

// Verify checks the page at block number blkno against its stored checksum,
// as PostgreSQL does when reading it (PageIsVerifiedExtended): a new page
// (IsNew) carries no checksum and passes if it is all zeros; any other page
// passes if its checksum matches. Errors wrap ErrChecksum, ErrNewNotZero or
// ErrPageSize.
//
// Verify only applies to clusters with data checksums enabled, and to pages
// read while no one writes them: a page read from a running server can be
// torn by a concurrent write, so callers backing up a live cluster must
// re-read on failure or excuse pages whose LSN is past the backup's start
// (WAL replay rewrites them).
func Verify(page []byte, blkno uint32) error {
	if len(page) != BlockSize {
		return fmt.Errorf("block %d: %w: %d bytes", blkno, ErrPageSize, len(page))
	}
	if IsNew(page) {
		if IsZero(page) {
			return nil
		}
		return fmt.Errorf("block %d: %w", blkno, ErrNewNotZero)
	}
	want := Checksum(page, blkno)
	if got := binary.LittleEndian.Uint16(page[8:]); got != want {
		return fmt.Errorf("block %d: %w: calculated %04X, page has %04X", blkno, ErrChecksum, want, got)
	}
	return nil
}
