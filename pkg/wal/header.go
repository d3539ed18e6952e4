package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// LongHeaderSize is the size of XLogLongPageHeaderData on 64-bit platforms.
const LongHeaderSize = 40

const xlpLongHeader = 0x0002

// SegmentHeader is the long page header that starts every WAL segment.
type SegmentHeader struct {
	Magic            uint16
	Info             uint16
	Timeline         uint32
	PageAddr         uint64
	SystemIdentifier uint64
	SegmentSize      uint32
	BlockSize        uint32
}

// ErrNotSegment means the bytes do not start with a WAL segment header.
var ErrNotSegment = errors.New("not a WAL segment (no long page header)")

// ParseSegmentHeader decodes the first LongHeaderSize bytes of a segment.
// Layout (little-endian): xlp_magic u16, xlp_info u16, xlp_tli u32,
// xlp_pageaddr u64, xlp_rem_len u32, padding u32, xlp_sysid u64,
// xlp_seg_size u32, xlp_xlog_blcksz u32.
func ParseSegmentHeader(b []byte) (SegmentHeader, error) {
	if len(b) < LongHeaderSize {
		return SegmentHeader{}, fmt.Errorf("%w: %d bytes", ErrNotSegment, len(b))
	}
	le := binary.LittleEndian
	h := SegmentHeader{
		Magic:            le.Uint16(b[0:]),
		Info:             le.Uint16(b[2:]),
		Timeline:         le.Uint32(b[4:]),
		PageAddr:         le.Uint64(b[8:]),
		SystemIdentifier: le.Uint64(b[24:]),
		SegmentSize:      le.Uint32(b[32:]),
		BlockSize:        le.Uint32(b[36:]),
	}
	if h.Info&xlpLongHeader == 0 || h.Magic < 0xD000 || h.SegmentSize == 0 || h.SegmentSize&(h.SegmentSize-1) != 0 || h.BlockSize == 0 {
		return SegmentHeader{}, ErrNotSegment
	}
	return h, nil
}

// CheckSegment verifies that data is the segment called name of the cluster
// with system identifier sysid: the header's system identifier, timeline,
// page address and the file's size must all agree.
func CheckSegment(name Name, data []byte, sysid uint64) (SegmentHeader, error) {
	h, err := ParseSegmentHeader(data)
	if err != nil {
		return h, fmt.Errorf("WAL file %s: %w", name.Raw, err)
	}
	if sysid != 0 && h.SystemIdentifier != sysid {
		return h, fmt.Errorf("WAL file %s belongs to the cluster with system identifier %d, not this cluster's %d", name.Raw, h.SystemIdentifier, sysid)
	}
	if name.Kind == KindSegment || name.Kind == KindPartial {
		if name.Kind == KindSegment && uint64(len(data)) != uint64(h.SegmentSize) {
			return h, fmt.Errorf("WAL file %s is %d bytes, its header says segments are %d bytes", name.Raw, len(data), h.SegmentSize)
		}
		// The first page of a segment is written on the segment's own
		// timeline, or on an older one when the timeline began inside it
		// (the new timeline's copy of the switch segment): never a newer.
		if h.Timeline > name.Timeline {
			return h, fmt.Errorf("WAL file %s holds WAL of timeline %d, newer than its name's %d", name.Raw, h.Timeline, name.Timeline)
		}
		want := name.SegNo(uint64(h.SegmentSize)) * uint64(h.SegmentSize)
		if h.PageAddr != want {
			return h, fmt.Errorf("WAL file %s starts at %X/%X, its name says %X/%X", name.Raw, h.PageAddr>>32, uint32(h.PageAddr), want>>32, uint32(want))
		}
	}
	return h, nil
}

// SystemIdentifier reads the database system identifier from
// PGDATA/global/pg_control (the first field of ControlFileData).
func SystemIdentifier(pgdata string) (uint64, error) {
	f, err := os.Open(filepath.Join(pgdata, "global", "pg_control"))
	if err != nil {
		return 0, fmt.Errorf("reading the system identifier: %w", err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return 0, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
