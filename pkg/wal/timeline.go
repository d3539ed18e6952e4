package wal

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// HistoryEntry is one line of a timeline history file: timeline Timeline
// ended at Switch, where its child on the way to the file's timeline began.
type HistoryEntry struct {
	Timeline uint32
	Switch   LSN
}

// HistoryFileName is the name of timeline tli's history file.
func HistoryFileName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// ParseHistory parses the history file of timeline tli: one line per
// ancestor, "parentTLI<tab>switchpoint<tab>reason", oldest first; blank
// lines and lines starting with # are ignored (PostgreSQL's
// readTimeLineHistory). The ancestors must be in ascending order, below
// tli, with switch points that do not go back.
func ParseHistory(b []byte, tli uint32) ([]HistoryEntry, error) {
	var h []HistoryEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("syntax error in history file: %q", line)
		}
		parent, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("syntax error in history file: %q", line)
		}
		end, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("syntax error in history file: %q", line)
		}
		if len(h) > 0 && (uint32(parent) <= h[len(h)-1].Timeline || end < h[len(h)-1].Switch) || uint32(parent) >= tli {
			return nil, fmt.Errorf("invalid history file: timeline %d switching at %s out of sequence", parent, end)
		}
		h = append(h, HistoryEntry{Timeline: uint32(parent), Switch: end})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return h, nil
}

// WentOn reports whether timeline tli holds WAL at or after at, the point
// where a child timeline branched off it, and says what: one of its
// archived segments (segs, ascending segment numbers) begins at or after
// at, or the archived segment holding at has a record that begins at or
// after it (read through src, which opens tli's segments). A timeline
// that ended there (a failover) has neither; one that went on (a copy
// promoted from a backup, or a second primary) has one or the other.
func WentOn(ctx context.Context, src SegmentSource, segSize uint64, tli uint32, segs []uint64, at LSN) (bool, string, error) {
	for _, s := range segs {
		if s*segSize >= uint64(at) {
			return true, "segment " + SegmentName(tli, s, segSize) + " is archived", nil
		}
	}
	holding := uint64(at) / segSize
	if uint64(at)%segSize == 0 || !slices.Contains(segs, holding) {
		return false, "", nil
	}
	rr, err := NewRecordReader(src, segSize, at)
	if err != nil {
		return false, "", err
	}
	defer rr.Close()
	rec, err := rr.Next(ctx)
	switch {
	case errors.Is(err, io.EOF):
		return false, "", nil
	case err != nil:
		return false, "", fmt.Errorf("reading timeline %d's WAL after %s: %w", tli, at, err)
	}
	return true, fmt.Sprintf("segment %s holds WAL at %s", SegmentName(tli, holding, segSize), rec.LSN), nil
}
