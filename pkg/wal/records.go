package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// This file reads the records of a sequence of WAL segments, as
// PostgreSQL 15's xlogreader.c does (layouts from access/xlog_internal.h
// and access/xlogrecord.h; all integers little-endian, 64-bit alignment):
//
// Every page (XLOG_BLCKSZ, 8 kB by default) starts with a header:
//
//	0   u16 xlp_magic      (XLogPageMagic)
//	2   u16 xlp_info       (xlp* flags)
//	4   u32 xlp_tli        timeline of the page
//	8   u64 xlp_pageaddr   LSN of the page
//	16  u32 xlp_rem_len    bytes of a record continued from the previous page
//	20  4 bytes padding                          (short header: 24 bytes)
//	24  u64 xlp_sysid      first page of a segment only:
//	32  u32 xlp_seg_size   the long header,
//	36  u32 xlp_xlog_blcksz                      40 bytes
//
// Records start at 8-byte aligned positions and may span pages and
// segments: the rest of a record goes after the next page's header, which
// then has XLP_FIRST_IS_CONTRECORD set and xlp_rem_len the bytes still to
// come. A record begins with XLogRecord:
//
//	0   u32 xl_tot_len     whole record, header included
//	4   u32 xl_xid
//	8   u64 xl_prev        LSN of the previous record
//	16  u8  xl_info
//	17  u8  xl_rmid        resource manager
//	18  2 bytes padding
//	20  u32 xl_crc         CRC-32C of the record after the header, then of
//	                       the header's first 20 bytes
//
// then block headers, the main-data header, block data and main data (see
// Record.MainData).

// XLogPageMagic is PostgreSQL 15's XLOG_PAGE_MAGIC: the first two bytes of
// every WAL page.
const XLogPageMagic = 0xD110

// ShortHeaderSize is the size of XLogPageHeaderData (SizeOfXLogShortPHD).
const ShortHeaderSize = 24

// RecordHeaderSize is the size of XLogRecord (SizeOfXLogRecord).
const RecordHeaderSize = 24

// Resource manager IDs and xl_info values this package interprets.
const (
	RmXLogID = 0 // RM_XLOG_ID

	XLogSwitch       = 0x40 // XLOG_SWITCH: the rest of the segment is unused
	XLogRestorePoint = 0x70 // XLOG_RESTORE_POINT: pg_create_restore_point

	xlrInfoMask = 0x0F // XLR_INFO_MASK: the bits of xl_info not for the rmgr
)

// Page header flags (xlp_info).
const (
	xlpFirstIsContRecord          = 0x0001
	xlpFirstIsOverwriteContRecord = 0x0008
	xlpAllFlags                   = 0x000F
)

// Block reference IDs in a record (XLR_*).
const (
	xlrMaxBlockID         = 32
	xlrBlockIDDataShort   = 255
	xlrBlockIDDataLong    = 254
	xlrBlockIDOrigin      = 253
	xlrBlockIDTopLevelXID = 252
)

// Block header flags (BKPBLOCK_*) and image flags (BKPIMAGE_*), PG 15.
const (
	bkpBlockHasImage = 0x10
	bkpBlockHasData  = 0x20
	bkpBlockSameRel  = 0x80

	bkpImageHasHole    = 0x01
	bkpImageCompressed = 0x04 | 0x08 | 0x10 // PGLZ, LZ4, ZSTD
)

const (
	maxAlign = 8
	// maxRecordSize is PostgreSQL's XLogRecordMaxSize (1020 MB): a longer
	// xl_tot_len is garbage.
	maxRecordSize = 1020 << 20
	// keepLimit is the largest record whose bytes a RecordReader keeps
	// (but RM_XACT records, kept up to maxRecordSize); longer ones are checked (CRC) while they stream past, without being
	// held in memory.
	keepLimit = 1 << 20
	// relBlockSize is BLCKSZ, the relation page size full-page images
	// refer to.
	relBlockSize = 8192
	// rmMaxBuiltinID is RM_MAX_BUILTIN_ID in PostgreSQL 15
	// (RM_LOGICALMSG_ID); IDs from 128 up are custom resource managers.
	rmMaxBuiltinID = 21
	rmMinCustomID  = 128
)

// castagnoli is the CRC-32C table of the records' xl_crc (read only).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func maxAlignUp(v uint64) uint64 { return (v + maxAlign - 1) &^ (maxAlign - 1) }

// ErrNoSegment is wrapped by a SegmentSource's error when the segment is
// not available: the WAL that can be read ends there.
var ErrNoSegment = errors.New("WAL segment not available")

// SegmentSource opens WAL segment segNo for reading from its beginning.
// It returns an error wrapping ErrNoSegment when the segment is not
// available. A RecordReader reads segments in ascending order, each once
// and front to back, and closes one before opening the next.
type SegmentSource func(ctx context.Context, segNo uint64) (io.ReadCloser, error)

// Record is one WAL record.
type Record struct {
	// LSN is where the record begins, End where the next one is read
	// from (PostgreSQL's EndRecPtr): the record's end rounded up to 8
	// bytes (what XLogInsert returned to the record's writer), or for an
	// XLOG_SWITCH record the end of its segment.
	LSN, End LSN
	Prev     LSN    // xl_prev
	TotalLen uint32 // xl_tot_len
	XID      uint32
	Info     uint8
	RmID     uint8
	// Timeline is the timeline of the page the record begins on.
	Timeline uint32
	// Data is the whole record, header included, or nil for records
	// longer than 1 MiB but RM_XACT ones (which are checked but not
	// kept). It is valid
	// until the next call to Next.
	Data []byte
}

// RestorePoint is a named restore point (an XLOG_RESTORE_POINT record).
type RestorePoint struct {
	Name     string
	Time     time.Time // rp_time: when it was created
	LSN, End LSN       // the record's LSN and End
	Timeline uint32
}

// IsRestorePoint reports whether the record is an XLOG_RESTORE_POINT.
func (r *Record) IsRestorePoint() bool {
	return r.RmID == RmXLogID && r.Info&^xlrInfoMask == XLogRestorePoint
}

// RestorePoint decodes an XLOG_RESTORE_POINT record: its main data is
// xl_restore_point { int64 rp_time; char rp_name[64] }, rp_time in
// microseconds since 2000-01-01 UTC and rp_name NUL-terminated.
func (r *Record) RestorePoint() (RestorePoint, error) {
	if !r.IsRestorePoint() {
		return RestorePoint{}, fmt.Errorf("record at %s (rmgr %d, info %#x) is not a restore point", r.LSN, r.RmID, r.Info)
	}
	d, err := r.MainData()
	if err != nil {
		return RestorePoint{}, err
	}
	if len(d) < 8+64 {
		return RestorePoint{}, fmt.Errorf("restore point at %s: %d bytes of data, want 72", r.LSN, len(d))
	}
	name := d[8 : 8+64]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	us := int64(binary.LittleEndian.Uint64(d))
	return RestorePoint{Name: string(name), Time: pgTime(us), LSN: r.LSN, End: r.End, Timeline: r.Timeline}, nil
}

// pgTime converts a TimestampTz (µs since 2000-01-01 UTC, PostgreSQL's
// epoch) to a time.
func pgTime(us int64) time.Time {
	const epochUnixMicro = 946684800 * 1000000 // 2000-01-01 in Unix µs
	if us > 0 && us > (1<<63-1)-epochUnixMicro {
		us = (1<<63 - 1) - epochUnixMicro
	}
	return time.UnixMicro(us + epochUnixMicro).UTC()
}

// MainData returns the record's main data (XLogRecGetData): the record
// after its header is a sequence of block headers (block IDs 0..32, each
// with fork flags, data length, an optional image header, an optional
// RelFileNode and a block number), an origin (253) or top-level XID (252),
// and last the main-data header (255: one length byte, 254: four); then
// the block images and data in order, and the main data at the end. It
// fails for records whose bytes were not kept and for malformed headers.
func (r *Record) MainData() ([]byte, error) {
	_, main, err := r.decode(false)
	return main, err
}

// BlockRef is one block a record refers to: its block ID in the record,
// the relation (RelFileNode: tablespace, database and relfilenode OIDs),
// the fork and the block number.
type BlockRef struct {
	ID                       uint8
	SpcNode, DBNode, RelNode uint32
	Fork                     uint8
	Block                    uint32
	HasImage, HasData        bool
}

// Blocks returns the blocks the record refers to, in block ID order (see
// MainData for the layout). It fails for records whose bytes were not kept
// and for malformed headers.
func (r *Record) Blocks() ([]BlockRef, error) {
	blocks, _, err := r.decode(true)
	return blocks, err
}

// decode walks the record's headers, returning its main data and, with
// wantBlocks, its block references.
func (r *Record) decode(wantBlocks bool) ([]BlockRef, []byte, error) {
	var blocks []BlockRef
	var rel [3]uint32
	if r.Data == nil {
		return nil, nil, fmt.Errorf("record at %s: its %d bytes were not kept", r.LSN, r.TotalLen)
	}
	if len(r.Data) < RecordHeaderSize || uint64(len(r.Data)) != uint64(r.TotalLen) {
		return nil, nil, fmt.Errorf("record at %s: %d bytes, header says %d", r.LSN, len(r.Data), r.TotalLen)
	}
	p := r.Data[RecordHeaderSize:]
	remaining := uint64(len(p))
	var datatotal, mainLen uint64
	maxBlock := -1
	haveRel := false
	short := fmt.Errorf("record at %s: invalid record length (block headers run past its end)", r.LSN)
	take := func(n int) ([]byte, bool) {
		if len(p) < n {
			return nil, false
		}
		b := p[:n]
		p = p[n:]
		remaining -= uint64(n)
		return b, true
	}
	for remaining > datatotal {
		b, ok := take(1)
		if !ok {
			return nil, nil, short
		}
		id := b[0]
		switch {
		case id == xlrBlockIDDataShort:
			b, ok := take(1)
			if !ok {
				return nil, nil, short
			}
			mainLen = uint64(b[0])
		case id == xlrBlockIDDataLong:
			b, ok := take(4)
			if !ok {
				return nil, nil, short
			}
			mainLen = uint64(binary.LittleEndian.Uint32(b))
		case id == xlrBlockIDOrigin:
			if _, ok := take(2); !ok {
				return nil, nil, short
			}
			continue
		case id == xlrBlockIDTopLevelXID:
			if _, ok := take(4); !ok {
				return nil, nil, short
			}
			continue
		case id <= xlrMaxBlockID:
			if int(id) <= maxBlock {
				return nil, nil, fmt.Errorf("record at %s: out-of-order block_id %d", r.LSN, id)
			}
			maxBlock = int(id)
			b, ok := take(3)
			if !ok {
				return nil, nil, short
			}
			flags := b[0]
			ref := BlockRef{ID: id, Fork: flags & 0x0F, HasImage: flags&bkpBlockHasImage != 0, HasData: flags&bkpBlockHasData != 0}
			dataLen := uint64(binary.LittleEndian.Uint16(b[1:]))
			if (flags&bkpBlockHasData != 0) != (dataLen != 0) {
				return nil, nil, fmt.Errorf("record at %s: block %d: BKPBLOCK_HAS_DATA does not agree with data length %d", r.LSN, id, dataLen)
			}
			datatotal += dataLen
			if flags&bkpBlockHasImage != 0 {
				b, ok := take(5)
				if !ok {
					return nil, nil, short
				}
				imgLen := uint64(binary.LittleEndian.Uint16(b))
				info := b[4]
				if info&bkpImageCompressed != 0 && info&bkpImageHasHole != 0 {
					if _, ok := take(2); !ok { // hole length
						return nil, nil, short
					}
				}
				if info&bkpImageHasHole == 0 && info&bkpImageCompressed == 0 && imgLen != relBlockSize {
					return nil, nil, fmt.Errorf("record at %s: block %d: full-page image of %d bytes without hole or compression", r.LSN, id, imgLen)
				}
				datatotal += imgLen
			}
			if flags&bkpBlockSameRel == 0 {
				b, ok := take(12) // RelFileNode
				if !ok {
					return nil, nil, short
				}
				le := binary.LittleEndian
				rel = [3]uint32{le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:])}
				haveRel = true
			} else if !haveRel {
				return nil, nil, fmt.Errorf("record at %s: BKPBLOCK_SAME_REL set but no previous relation", r.LSN)
			}
			b, ok = take(4) // block number
			if !ok {
				return nil, nil, short
			}
			if wantBlocks {
				ref.SpcNode, ref.DBNode, ref.RelNode = rel[0], rel[1], rel[2]
				ref.Block = binary.LittleEndian.Uint32(b)
				blocks = append(blocks, ref)
			}
			continue
		default:
			return nil, nil, fmt.Errorf("record at %s: invalid block_id %d", r.LSN, id)
		}
		datatotal += mainLen
		break // the main-data header is always last
	}
	if remaining != datatotal {
		return nil, nil, short
	}
	return blocks, r.Data[len(r.Data)-int(mainLen):], nil
}

// RecordReader reads the records of consecutive WAL segments. It stops at
// the end of valid WAL: a missing segment, a page whose header is not the
// expected one (zeroed, recycled, torn), a record whose length, prev-link
// or CRC is wrong. Those end the reading (Next returns io.EOF and End says
// where and why). Errors are only the source's, and WAL of another
// PostgreSQL version, segment size or cluster than the first segment's.
//
// It holds one page and at most one record of up to 1 MiB in memory,
// whatever the segment size, but for a transaction's (RM_XACT) record,
// held whole (up to PostgreSQL's 1020 MB record limit).
type RecordReader struct {
	src     SegmentSource
	segSize uint64
	start   LSN

	pageSize uint64 // xlp_xlog_blcksz, from the first segment's header
	sysid    uint64

	seg    io.ReadCloser
	segNo  uint64
	segOff uint64 // bytes of seg consumed
	hasSeg bool

	pg        page
	hasPage   bool
	lastTLI   uint32
	lastPage  LSN
	pos       LSN // the next record, or the page it begins on
	prev      LSN // the previous record, when havePrev
	havePrev  bool
	found     bool // pos is a record boundary
	done      bool
	endAt     LSN
	endReason string

	hdr [RecordHeaderSize]byte
	buf []byte
}

type page struct {
	lsn     LSN
	data    []byte
	hdrSize uint64
	info    uint16
	tli     uint32
	remLen  uint32
}

// endOfWAL ends the reading at a position, for a reason.
type endOfWAL struct {
	at     LSN
	reason string
}

func (e *endOfWAL) Error() string { return fmt.Sprintf("end of WAL at %s: %s", e.at, e.reason) }

// errRestart restarts reading a record at r.pos (an overwritten
// continuation record).
var errRestart = errors.New("restart")

// NewRecordReader reads the records that begin at or after start, in WAL
// made of segments of segSize bytes read from src. It begins at the start
// of start's segment, so start need not be a record boundary.
func NewRecordReader(src SegmentSource, segSize uint64, start LSN) (*RecordReader, error) {
	if segSize < 1<<20 || segSize > 1<<30 || segSize&(segSize-1) != 0 {
		return nil, fmt.Errorf("WAL segment size %d: want a power of two from 1 MiB to 1 GiB", segSize)
	}
	r := &RecordReader{src: src, segSize: segSize, start: start}
	r.pos = LSN(uint64(start) - uint64(start)%segSize)
	return r, nil
}

// End reports where the valid WAL ended and why, once Next returned io.EOF.
func (r *RecordReader) End() (LSN, string) { return r.endAt, r.endReason }

// Close closes the segment being read.
func (r *RecordReader) Close() error {
	r.done = true
	if r.hasSeg {
		r.hasSeg = false
		return r.seg.Close()
	}
	return nil
}

// Next returns the next record, or io.EOF at the end of valid WAL.
func (r *RecordReader) Next(ctx context.Context) (Record, error) {
	for {
		if r.done {
			return Record{}, io.EOF
		}
		if err := ctx.Err(); err != nil {
			return Record{}, err
		}
		var rec Record
		var err error
		first := !r.found
		if first {
			err = r.findFirst(ctx)
		} else {
			rec, err = r.read(ctx)
		}
		var end *endOfWAL
		switch {
		case errors.Is(err, errRestart):
			continue
		case errors.As(err, &end):
			return Record{}, r.finish(end)
		case err != nil:
			r.Close()
			return Record{}, err
		}
		if first || rec.LSN < r.start {
			continue
		}
		return rec, nil
	}
}

// finish ends the reading. Valid WAL that ends inside a segment may also
// be a damaged copy: the rest of the segment is read so that the source
// can report damage (its read error) rather than a short WAL.
func (r *RecordReader) finish(end *endOfWAL) error {
	r.done = true
	r.endAt, r.endReason = end.at, end.reason
	if r.hasSeg {
		r.hasSeg = false
		_, err := io.Copy(io.Discard, r.seg)
		r.seg.Close()
		if err != nil {
			return fmt.Errorf("reading WAL segment %d: %w", r.segNo, err)
		}
	}
	return io.EOF
}

func (r *RecordReader) end(at LSN, format string, args ...any) error {
	return &endOfWAL{at: at, reason: fmt.Sprintf(format, args...)}
}

// findFirst finds the first record that begins in the page at r.pos,
// skipping the rest of a record continued from before (as PostgreSQL's
// XLogFindNextRecord).
func (r *RecordReader) findFirst(ctx context.Context) error {
	for {
		pg, err := r.page(ctx, r.pos)
		if err != nil {
			return err
		}
		if pg.info&xlpFirstIsContRecord == 0 {
			r.pos = pg.lsn + LSN(pg.hdrSize)
			break
		}
		if maxAlignUp(uint64(pg.remLen)) >= r.pageSize-pg.hdrSize {
			r.pos = pg.lsn + LSN(r.pageSize)
			continue
		}
		r.pos = pg.lsn + LSN(pg.hdrSize+maxAlignUp(uint64(pg.remLen)))
		break
	}
	r.found = true
	return nil
}

// read reads the record at r.pos.
func (r *RecordReader) read(ctx context.Context) (Record, error) {
	pos := r.pos
	if uint64(pos)%r.pageSize == 0 {
		pg, err := r.page(ctx, pos)
		if err != nil {
			return Record{}, err
		}
		if pg.info&xlpFirstIsContRecord != 0 {
			return Record{}, r.end(pos, "page %s continues a record, none was expected", pos)
		}
		pos += LSN(pg.hdrSize)
	}
	pageLSN := pos - pos%LSN(r.pageSize)
	pg, err := r.page(ctx, pageLSN)
	if err != nil {
		return Record{}, err
	}
	off := uint64(pos - pageLSN)
	if off < pg.hdrSize {
		return Record{}, r.end(pos, "record offset %d inside the page header", off)
	}
	totLen := binary.LittleEndian.Uint32(pg.data[off:])
	switch {
	case totLen == 0:
		return Record{}, r.end(pos, "zeros where a record should begin")
	case totLen < RecordHeaderSize:
		return Record{}, r.end(pos, "invalid record length %d", totLen)
	case totLen > maxRecordSize:
		return Record{}, r.end(pos, "record length %d too long", totLen)
	}
	// Records up to keepLimit are kept, and RM_XACT records of any size
	// (a transaction's end with thousands of invalidations or dropped
	// relations is still the end to know): which one it is is known once
	// the header is read, until then the bytes are kept.
	keep := totLen <= keepLimit
	if cap(r.buf) > keepLimit {
		r.buf = nil // a big record's buffer is not held on to
	}
	r.buf = r.buf[:0]
	var got uint64
	var crc uint32
	var header bool
	tli := pg.tli
	add := func(b []byte) error {
		body := b
		if got < RecordHeaderSize {
			n := copy(r.hdr[got:], b)
			body = b[n:]
		}
		crc = crc32.Update(crc, castagnoli, body)
		if keep || !header {
			r.buf = append(r.buf, b...)
		}
		got += uint64(len(b))
		if !header && got >= RecordHeaderSize {
			header = true
			if err := r.checkHeader(pos); err != nil {
				return err
			}
			if keep = keep || r.hdr[17] == RmXactID; !keep {
				r.buf = r.buf[:0]
			}
		}
		return nil
	}
	n := min(uint64(totLen), r.pageSize-off)
	if err := add(pg.data[off : off+n]); err != nil {
		return Record{}, err
	}
	endPos := pos + LSN(n)
	for got < uint64(totLen) {
		pageLSN += LSN(r.pageSize)
		pg, err := r.page(ctx, pageLSN)
		if err != nil {
			return Record{}, err
		}
		if pg.info&xlpFirstIsOverwriteContRecord != 0 {
			// The rest of this record was lost and overwritten: read on
			// from this page, as if the record had never begun.
			r.pos = pageLSN
			return Record{}, errRestart
		}
		if pg.info&xlpFirstIsContRecord == 0 {
			return Record{}, r.end(pos, "record continues but page %s has no contrecord flag", pageLSN)
		}
		if pg.remLen == 0 || uint64(totLen) != uint64(pg.remLen)+got {
			return Record{}, r.end(pos, "page %s continues %d bytes, %d expected", pageLSN, pg.remLen, uint64(totLen)-got)
		}
		n := min(uint64(pg.remLen), r.pageSize-pg.hdrSize)
		if err := add(pg.data[pg.hdrSize : pg.hdrSize+n]); err != nil {
			return Record{}, err
		}
		endPos = pageLSN + LSN(pg.hdrSize+n)
	}
	crc = crc32.Update(crc, castagnoli, r.hdr[:20])
	if want := binary.LittleEndian.Uint32(r.hdr[20:]); crc != want {
		return Record{}, r.end(pos, "record CRC %08X, header says %08X", crc, want)
	}
	le := binary.LittleEndian
	rec := Record{
		LSN:      pos,
		End:      LSN(maxAlignUp(uint64(endPos))),
		Prev:     LSN(le.Uint64(r.hdr[8:])),
		TotalLen: totLen,
		XID:      le.Uint32(r.hdr[4:]),
		Info:     r.hdr[16],
		RmID:     r.hdr[17],
		Timeline: tli,
	}
	if keep {
		rec.Data = r.buf
	}
	r.pos = rec.End
	if rec.RmID == RmXLogID && rec.Info&^xlrInfoMask == XLogSwitch {
		if rest := uint64(r.pos) % r.segSize; rest != 0 {
			r.pos += LSN(r.segSize - rest)
		}
		rec.End = r.pos
	}
	r.prev, r.havePrev = pos, true
	return rec, nil
}

// checkHeader validates the record header in r.hdr (ValidXLogRecordHeader).
func (r *RecordReader) checkHeader(pos LSN) error {
	prev := LSN(binary.LittleEndian.Uint64(r.hdr[8:]))
	rmid := r.hdr[17]
	if rmid > rmMaxBuiltinID && rmid < rmMinCustomID {
		return r.end(pos, "invalid resource manager ID %d", rmid)
	}
	if r.havePrev {
		if prev != r.prev {
			return r.end(pos, "record's prev-link %s, previous record at %s", prev, r.prev)
		}
	} else if prev >= pos {
		return r.end(pos, "record's prev-link %s is not before it", prev)
	}
	return nil
}

// page returns the validated page at lsn, reading forward in the current
// segment or opening the segment it lies in.
func (r *RecordReader) page(ctx context.Context, lsn LSN) (*page, error) {
	if r.hasPage && r.pg.lsn == lsn {
		return &r.pg, nil
	}
	segNo := uint64(lsn) / r.segSize
	off := uint64(lsn) % r.segSize
	if !r.hasSeg || r.segNo != segNo {
		if r.hasSeg && segNo < r.segNo {
			return nil, fmt.Errorf("WAL reader: segment %d requested after %d", segNo, r.segNo)
		}
		if err := r.openSegment(ctx, segNo); err != nil {
			return nil, err
		}
		if off == 0 {
			return &r.pg, nil
		}
	}
	if off < r.segOff {
		return nil, fmt.Errorf("WAL reader: page %s requested after offset %d of its segment", lsn, r.segOff)
	}
	if skip := off - r.segOff; skip > 0 {
		n, err := io.CopyN(io.Discard, r.seg, int64(skip))
		r.segOff += uint64(n)
		if err != nil {
			return nil, r.readErr(lsn, err)
		}
	}
	r.hasPage = false
	if uint64(cap(r.pg.data)) < r.pageSize {
		r.pg.data = make([]byte, r.pageSize)
	}
	r.pg.data = r.pg.data[:r.pageSize]
	n, err := io.ReadFull(r.seg, r.pg.data)
	r.segOff += uint64(n)
	if err != nil {
		return nil, r.readErr(lsn, err)
	}
	if err := r.checkPage(lsn, off == 0); err != nil {
		return nil, err
	}
	r.hasPage = true
	return &r.pg, nil
}

// readErr turns a short segment into the end of WAL, and passes other
// read errors on.
func (r *RecordReader) readErr(lsn LSN, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r.end(lsn, "segment %d ends before page %s", r.segNo, lsn)
	}
	return fmt.Errorf("reading WAL segment %d: %w", r.segNo, err)
}

// openSegment closes the current segment (reading it to its end, so that
// the source verifies it) and opens segNo, reading and checking its first
// page.
func (r *RecordReader) openSegment(ctx context.Context, segNo uint64) error {
	if r.hasSeg {
		r.hasSeg = false
		_, err := io.Copy(io.Discard, r.seg)
		r.seg.Close()
		if err != nil {
			return fmt.Errorf("reading WAL segment %d: %w", r.segNo, err)
		}
	}
	r.hasPage = false
	lsn := LSN(segNo * r.segSize)
	rc, err := r.src(ctx, segNo)
	if errors.Is(err, ErrNoSegment) {
		return r.end(lsn, "%v", err)
	}
	if err != nil {
		return err
	}
	r.seg, r.segNo, r.segOff, r.hasSeg = rc, segNo, 0, true
	var lh [LongHeaderSize]byte
	n, err := io.ReadFull(rc, lh[:])
	r.segOff += uint64(n)
	if err != nil {
		return r.readErr(lsn, err)
	}
	if r.pageSize == 0 {
		// The first segment tells the page size.
		h, err := ParseSegmentHeader(lh[:])
		if err != nil || h.Magic != XLogPageMagic || h.PageAddr != uint64(lsn) {
			if err == nil && h.Magic != XLogPageMagic && h.Magic <= 0xD1FF {
				return fmt.Errorf("WAL segment %d has page magic %04X: not PostgreSQL 15's WAL (%04X)", segNo, h.Magic, XLogPageMagic)
			}
			return r.end(lsn, "segment %d does not begin with a valid long page header", segNo)
		}
		if uint64(h.SegmentSize) != r.segSize {
			return fmt.Errorf("WAL segment %d says segments are %d bytes, not %d", segNo, h.SegmentSize, r.segSize)
		}
		if h.BlockSize < 1024 || h.BlockSize > 65536 || h.BlockSize&(h.BlockSize-1) != 0 {
			return r.end(lsn, "segment %d has an invalid page size %d", segNo, h.BlockSize)
		}
		r.pageSize = uint64(h.BlockSize)
		r.sysid = h.SystemIdentifier
	}
	if uint64(cap(r.pg.data)) < r.pageSize {
		r.pg.data = make([]byte, r.pageSize)
	}
	r.pg.data = r.pg.data[:r.pageSize]
	copy(r.pg.data, lh[:])
	n, err = io.ReadFull(rc, r.pg.data[LongHeaderSize:])
	r.segOff += uint64(n)
	if err != nil {
		return r.readErr(lsn, err)
	}
	if err := r.checkPage(lsn, true); err != nil {
		return err
	}
	r.hasPage = true
	return nil
}

// checkPage validates the header of the page in r.pg.data at lsn
// (XLogReaderValidatePageHeader) and records its fields in r.pg.
func (r *RecordReader) checkPage(lsn LSN, first bool) error {
	b := r.pg.data
	le := binary.LittleEndian
	magic, info := le.Uint16(b[0:]), le.Uint16(b[2:])
	tli, addr, rem := le.Uint32(b[4:]), LSN(le.Uint64(b[8:])), le.Uint32(b[16:])
	if magic != XLogPageMagic {
		return r.end(lsn, "page magic %04X", magic)
	}
	if info&^xlpAllFlags != 0 {
		return r.end(lsn, "invalid page info bits %04X", info)
	}
	hdr := uint64(ShortHeaderSize)
	if info&xlpLongHeader != 0 {
		if !first {
			return r.end(lsn, "long page header in the middle of a segment")
		}
		hdr = LongHeaderSize
		sysid, segSize, blcksz := le.Uint64(b[24:]), le.Uint32(b[32:]), le.Uint32(b[36:])
		if uint64(segSize) != r.segSize || uint64(blcksz) != r.pageSize {
			return fmt.Errorf("WAL page %s: segment size %d and page size %d, want %d and %d", lsn, segSize, blcksz, r.segSize, r.pageSize)
		}
		if sysid != r.sysid {
			return fmt.Errorf("WAL page %s belongs to the cluster with system identifier %d, not %d", lsn, sysid, r.sysid)
		}
	} else if first {
		return r.end(lsn, "first page of a segment without a long header")
	}
	if addr != lsn {
		return r.end(lsn, "page address %s, expected %s", addr, lsn)
	}
	if lsn > r.lastPage {
		if tli < r.lastTLI {
			return r.end(lsn, "timeline %d after %d", tli, r.lastTLI)
		}
		r.lastPage, r.lastTLI = lsn, tli
	}
	r.pg.lsn, r.pg.hdrSize, r.pg.info, r.pg.tli, r.pg.remLen = lsn, hdr, info, tli, rem
	return nil
}
