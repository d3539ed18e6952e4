package health

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// RepoRef is a configured repository: its name and mode (sync or async).
type RepoRef struct {
	Name string
	Mode string
}

// CopyLag is an async repository's copy backlog as its copier knows it
// (agent/repocopy Status): bytes queued and not yet copied, and when the
// oldest of them was queued (zero: nothing queued).
type CopyLag struct {
	Repo          string
	Bytes         int64
	OldestMissing time.Time
}

// ArchiverState is what one round knows of the primary's archiving.
type ArchiverState struct {
	Now time.Time
	// CurrentLSN: pg_current_wal_lsn(), the WAL written so far.
	CurrentLSN  uint64
	SegmentSize uint64
	// OldestReady: the oldest WAL segment waiting for archive_command
	// (a .ready file; "" when none). ReadyCount counts every .ready file.
	OldestReady string
	ReadyCount  int
	// LastArchived: pg_stat_archiver.last_archived_time (zero: never since
	// the statistics were reset); Started: the postmaster's start time.
	LastArchived time.Time
	Started      time.Time
}

// ArchiveRPO computes, per repository, the WAL the primary holds that the
// repository does not. WAL before the oldest .ready segment (or, with
// none, before the current segment) was archived: archive_command wrote
// it to every sync repository. Bytes count from the start of that segment
// to the current LSN; their age is the time since the last successful
// archive (the oldest unarchived byte was written after it at the
// earliest: an upper bound), or since the server started when nothing was
// archived. An async repository adds its copier's backlog: its bytes, and
// at least the age of its oldest object not copied.
func ArchiveRPO(st ArchiverState, repos []RepoRef, lags []CopyLag) []*pgdrv1.ArchiveRPO {
	segSize := st.SegmentSize
	if segSize == 0 {
		segSize = wal.DefaultSegmentSize
	}
	start := st.CurrentLSN / segSize * segSize
	if st.OldestReady != "" {
		if n, err := wal.ParseName(st.OldestReady); err == nil && n.Kind == wal.KindSegment {
			start = min(start, n.SegNo(segSize)*segSize)
		}
	}
	var bytes uint64
	if st.CurrentLSN > start {
		bytes = st.CurrentLSN - start
	}
	var seconds float64
	if bytes > 0 {
		since := st.LastArchived
		if since.IsZero() {
			since = st.Started
		}
		if !since.IsZero() {
			seconds = max(0, st.Now.Sub(since).Seconds())
		}
	}
	out := make([]*pgdrv1.ArchiveRPO, 0, len(repos))
	for _, r := range repos {
		a := &pgdrv1.ArchiveRPO{Repository: r.Name, Mode: r.Mode, Bytes: bytes, Seconds: seconds, ReadySegments: uint32(st.ReadyCount)}
		if r.Mode == config.ModeAsync {
			for _, l := range lags {
				if l.Repo != r.Name {
					continue
				}
				if l.Bytes > 0 {
					a.Bytes += uint64(l.Bytes)
				}
				if !l.OldestMissing.IsZero() {
					a.Seconds = max(a.Seconds, st.Now.Sub(l.OldestMissing).Seconds())
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// readyBacklog reads pg_wal/archive_status: the number of .ready files
// and the oldest WAL segment among them (names sort by timeline, then
// position; the lowest position is the oldest WAL).
func readyBacklog(pgdata string) (oldest string, count int, err error) {
	ents, err := os.ReadDir(filepath.Join(pgdata, "pg_wal", "archive_status"))
	if err != nil {
		return "", 0, err
	}
	var oldestPos string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok {
			continue
		}
		count++
		if n, err := wal.ParseName(name); err == nil && n.Kind == wal.KindSegment {
			if pos := name[8:]; oldest == "" || pos < oldestPos {
				oldest, oldestPos = name, pos
			}
		}
	}
	return oldest, count, nil
}
