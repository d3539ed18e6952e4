package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the kind of file found in pg_wal or in the archive.
type Kind int

// The kinds of archived file.
const (
	KindSegment       Kind = iota + 1 // 000000010000000000000001
	KindHistory                       // 00000002.history
	KindPartial                       // 000000010000000000000001.partial
	KindBackupHistory                 // 000000010000000000000001.00000028.backup
)

func (k Kind) String() string {
	switch k {
	case KindSegment:
		return "segment"
	case KindHistory:
		return "history"
	case KindPartial:
		return "partial"
	case KindBackupHistory:
		return "backup-history"
	}
	return "unknown"
}

// DefaultSegmentSize is PostgreSQL's default wal_segment_size.
const DefaultSegmentSize = 16 << 20

// Name is a parsed WAL file name.
type Name struct {
	Kind     Kind
	Timeline uint32
	// Log and Seg are the two halves of the segment number (not set for history files).
	Log, Seg uint32
	Raw      string
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// ParseName parses the base name of a file PostgreSQL archives.
func ParseName(name string) (Name, error) {
	n := Name{Raw: name}
	bad := fmt.Errorf("%q is not a WAL file name (segment, .history, .partial or .backup)", name)
	hex8 := func(s string) uint32 {
		v, _ := strconv.ParseUint(s, 16, 32)
		return uint32(v)
	}
	switch {
	case len(name) == 24 && isHex(name):
		n.Kind = KindSegment
	case len(name) == 16 && strings.HasSuffix(name, ".history") && isHex(name[:8]):
		n.Kind = KindHistory
		n.Timeline = hex8(name[:8])
		if n.Timeline == 0 {
			return Name{}, bad
		}
		return n, nil
	case len(name) == 32 && strings.HasSuffix(name, ".partial") && isHex(name[:24]):
		n.Kind = KindPartial
	case len(name) == 40 && strings.HasSuffix(name, ".backup") && name[24] == '.' && isHex(name[:24]) && isHex(name[25:33]):
		n.Kind = KindBackupHistory
	default:
		return Name{}, bad
	}
	n.Timeline, n.Log, n.Seg = hex8(name[:8]), hex8(name[8:16]), hex8(name[16:24])
	if n.Timeline == 0 {
		return Name{}, bad
	}
	return n, nil
}

// SegNo is the segment's number for a given segment size.
func (n Name) SegNo(segSize uint64) uint64 {
	return uint64(n.Log)*SegmentsPerXLogID(segSize) + uint64(n.Seg)
}

// SegmentsPerXLogID is how many segments one "log id" (4 GiB of WAL) holds.
func SegmentsPerXLogID(segSize uint64) uint64 { return 0x100000000 / segSize }

// SegmentName formats the name of segment segNo on timeline tli.
func SegmentName(tli uint32, segNo, segSize uint64) string {
	per := SegmentsPerXLogID(segSize)
	return fmt.Sprintf("%08X%08X%08X", tli, uint32(segNo/per), uint32(segNo%per))
}

// Next returns the name of the segment after a segment name, on the same timeline.
func (n Name) Next(segSize uint64) string {
	return SegmentName(n.Timeline, n.SegNo(segSize)+1, segSize)
}
