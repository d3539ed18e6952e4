package divergence

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/wal"
)

// ErrSameTimeline: this node is on the new primary's timeline already (a
// rejoin tried again after pg_rewind, or a replica that never left it):
// nothing of its own to report.
var ErrSameTimeline = errors.New("no fork")

// Fork asks the new primary (conn) where its timeline forked off timeline
// tli: its current timeline (the first eight hex digits of the name of
// the WAL file it writes to) and the switch point its history file gives
// for tli, read with pg_read_binary_file (which pg_rewind needs too).
func Fork(ctx context.Context, conn *pgx.Conn, tli uint32) (newTLI uint32, fork wal.LSN, err error) {
	var file string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&file); err != nil {
		return 0, 0, fmt.Errorf("the new primary's timeline: %w", err)
	}
	cur, err := strconv.ParseUint(file[:min(8, len(file))], 16, 32)
	if err != nil || len(file) != 24 {
		return 0, 0, fmt.Errorf("the new primary's current WAL file %q: not a segment name", file)
	}
	newTLI = uint32(cur)
	if newTLI == tli {
		return newTLI, 0, fmt.Errorf("%w: the new primary is on this node's timeline %d", ErrSameTimeline, tli)
	}
	if newTLI < tli {
		return newTLI, 0, fmt.Errorf("the new primary is on timeline %d, before this node's %d: no fork point to read from", newTLI, tli)
	}
	var hist []byte
	name := "pg_wal/" + wal.HistoryFileName(newTLI)
	if err := conn.QueryRow(ctx, "SELECT pg_read_binary_file($1)", name).Scan(&hist); err != nil {
		return newTLI, 0, fmt.Errorf("reading the new primary's %s: %w", name, err)
	}
	entries, err := wal.ParseHistory(hist, newTLI)
	if err != nil {
		return newTLI, 0, fmt.Errorf("the new primary's %s: %w", name, err)
	}
	for _, e := range entries {
		if e.Timeline == tli {
			return newTLI, e.Switch, nil
		}
	}
	return newTLI, 0, fmt.Errorf("the new primary's %s has no entry for this node's timeline %d: its timeline did not fork off this one", name, tli)
}

// controlField reads one field of pg_controldata's output.
func controlField(out, name string) (string, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*?)\s*$`).FindStringSubmatch(out)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// controlData is what the report needs from pg_controldata: the timeline
// of the latest checkpoint (this node's) and the WAL segment size.
func controlData(out string) (tli uint32, segSize uint64, err error) {
	t, ok1 := controlField(out, "Latest checkpoint's TimeLineID")
	s, ok2 := controlField(out, "Bytes per WAL segment")
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("pg_controldata printed no timeline or segment size")
	}
	tv, err := strconv.ParseUint(t, 10, 32)
	if err != nil || tv == 0 {
		return 0, 0, fmt.Errorf("pg_controldata: timeline %q", t)
	}
	sv, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("pg_controldata: segment size %q", s)
	}
	return uint32(tv), sv, nil
}

// Cluster states of pg_controldata's "Database cluster state" that a
// server in recovery (a replica) leaves.
var recoveryStates = []string{"in archive recovery", "shut down in recovery"}

// wasReplica reports whether the control data says the server was a
// replica (running or shut down in recovery).
func wasReplica(out string) bool {
	st, _ := controlField(out, "Database cluster state")
	return slices.Contains(recoveryStates, st)
}

// pastFork reports whether the control data shows WAL past fork: the
// latest checkpoint or the minimum recovery end beyond it (what a
// replica whose WAL cannot be read is known to have received).
func pastFork(out string, fork wal.LSN) bool {
	for _, f := range []string{"Latest checkpoint location", "Minimum recovery ending location"} {
		if v, ok := controlField(out, f); ok {
			if l, err := wal.ParseLSN(v); err == nil && l > fork {
				return true
			}
		}
	}
	return false
}
