package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// LSN is a position in the write-ahead log.
type LSN uint64

// ParseLSN parses PostgreSQL's text form "X/Y" (hex halves).
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN (want X/Y in hex, e.g. 0/3000028)", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not an LSN (want X/Y in hex, e.g. 0/3000028)", s)
	}
	return LSN(h<<32 | l), nil
}

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// MarshalText writes the X/Y form (so JSON manifests read like PostgreSQL).
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses the X/Y form.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Segment is the name of the segment holding l on timeline tli.
func (l LSN) Segment(tli uint32, segSize uint64) string {
	return SegmentName(tli, uint64(l)/segSize, segSize)
}

// SegmentsBetween lists the segments holding WAL from start up to (not
// including) end on timeline tli: the files a backup needs to be consistent.
func SegmentsBetween(tli uint32, start, end LSN, segSize uint64) []string {
	first := uint64(start) / segSize
	last := first
	if end > start {
		last = (uint64(end) - 1) / segSize
	}
	out := make([]string, 0, last-first+1)
	for s := first; s <= last; s++ {
		out = append(out, SegmentName(tli, s, segSize))
	}
	return out
}
