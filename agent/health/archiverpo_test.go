package health

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

func TestArchiveRPOComputation(t *testing.T) {
	const seg = 16 << 20
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	repos := []RepoRef{{Name: "local", Mode: "sync"}, {Name: "dr", Mode: "async"}}
	for _, tc := range []struct {
		name         string
		st           ArchiverState
		lags         []CopyLag
		bytes, drB   uint64
		secs, drSecs float64
	}{
		{"at a segment boundary, nothing pending", ArchiverState{CurrentLSN: 3 * seg, LastArchived: now.Add(-time.Hour)}, nil, 0, 0, 0, 0},
		{"the current segment is not archived", ArchiverState{CurrentLSN: 3*seg + 100, LastArchived: now.Add(-90 * time.Second)}, nil, 100, 100, 90, 90},
		{"a .ready backlog counts from its oldest segment", ArchiverState{CurrentLSN: 5*seg + 10, OldestReady: "000000010000000000000002",
			ReadyCount: 3, LastArchived: now.Add(-10 * time.Minute)}, nil, 3*seg + 10, 3*seg + 10, 600, 600},
		{"a .history file in the backlog is not a position", ArchiverState{CurrentLSN: 5*seg + 10, OldestReady: "00000002.history",
			ReadyCount: 1, LastArchived: now.Add(-time.Second)}, nil, 10, 10, 1, 1},
		{"never archived: since the start", ArchiverState{CurrentLSN: seg + 8, Started: now.Add(-time.Minute)}, nil, 8, 8, 60, 60},
		{"the async copier's backlog adds to the async repository only", ArchiverState{CurrentLSN: 3*seg + 100, LastArchived: now.Add(-time.Second)},
			[]CopyLag{{Repo: "dr", Bytes: 2 * seg, OldestMissing: now.Add(-time.Hour)}, {Repo: "other", Bytes: 1}}, 100, 2*seg + 100, 1, 3600},
		{"an empty async queue adds nothing", ArchiverState{CurrentLSN: 3 * seg, LastArchived: now.Add(-time.Second)},
			[]CopyLag{{Repo: "dr"}}, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.st.Now, tc.st.SegmentSize = now, seg
			got := ArchiveRPO(tc.st, repos, tc.lags)
			if len(got) != 2 || got[0].Repository != "local" || got[1].Repository != "dr" || got[1].Mode != "async" {
				t.Fatalf("repositories %v", got)
			}
			if got[0].Bytes != tc.bytes || got[0].Seconds != tc.secs || got[1].Bytes != tc.drB || got[1].Seconds != tc.drSecs {
				t.Fatalf("local %d bytes %vs, dr %d bytes %vs; want %d %v, %d %v", got[0].Bytes, got[0].Seconds, got[1].Bytes, got[1].Seconds,
					tc.bytes, tc.secs, tc.drB, tc.drSecs)
			}
			if got[0].ReadySegments != uint32(tc.st.ReadyCount) {
				t.Fatalf("ready segments %d", got[0].ReadySegments)
			}
		})
	}
}

// TestArchiveRPOGrowsWhileArchivingFails: on a real primary whose
// archive_command fails, the reported archive RPO grows in bytes and in
// age, and falls back under a segment once archiving works again.
func TestArchiveRPOGrowsWhileArchivingFails(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{Conf: map[string]string{"archive_mode": "on", "archive_command": "'/bin/false'"}})
	pg.Start(t)
	dir := pgtest.OwnedDir(t, "pgdr-archive-")
	ok := filepath.Join(dir, "ok")
	pg.Exec(t, fmt.Sprintf(`ALTER SYSTEM SET archive_command = 'test -f %s && cp %%p %s/%%f'`, ok, dir))
	pg.Exec(t, "SELECT pg_reload_conf()")
	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewChecker(Config{Cluster: "main", Node: "pg-a1", PGData: pg.PGData, DSN: pg.DSN(),
		Repos: []RepoRef{{Name: "local", Mode: "sync"}}}, nil)
	defer c.Close(context.Background())
	ctx := context.Background()
	const seg = 16 << 20
	check := func() *pgdrv1.ArchiveRPO {
		t.Helper()
		r := c.Check(ctx)
		if r.Error != "" || len(r.ArchiveRpo) != 1 {
			t.Fatalf("report: %v", r)
		}
		return r.ArchiveRpo[0]
	}
	waitFor := func(what string, cond func(a *pgdrv1.ArchiveRPO) bool) *pgdrv1.ArchiveRPO {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			a := check()
			if cond(a) {
				return a
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last %v", what, a)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	write := func() {
		pg.Exec(t, "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t SELECT generate_series(1, 1000)")
		pg.Exec(t, "SELECT pg_switch_wal()")
		pg.Exec(t, "INSERT INTO t VALUES (1)")
	}

	write()
	// The switched segment is archived (not merely not .ready yet: the
	// first check may run before the archiver marked it).
	caughtUp := waitFor("archiving works", func(a *pgdrv1.ArchiveRPO) bool {
		return a.ReadySegments == 0 && a.Bytes < seg && !c.Archiver().LastArchived.IsZero()
	})
	if caughtUp.Seconds > 30 {
		t.Fatalf("archiving works, yet the archive RPO is %vs", caughtUp.Seconds)
	}
	if a := c.Archiver(); !a.Known || a.Ready != 0 || !a.OldestReady.IsZero() || time.Since(a.LastArchived) > 30*time.Second {
		t.Fatalf("archiving works: archiver %+v", a)
	}

	if err := os.Remove(ok); err != nil {
		t.Fatal(err)
	}
	write()
	write()
	first := waitFor("archiving fails", func(a *pgdrv1.ArchiveRPO) bool { return a.ReadySegments >= 2 && a.Bytes > 2*seg })
	time.Sleep(1100 * time.Millisecond) // the age must grow by a second: nothing else can show it
	write()
	second := check()
	if second.Bytes <= first.Bytes || second.Seconds < first.Seconds+1 {
		t.Fatalf("while archiving fails the RPO must grow: %v then %v", first, second)
	}
	// The .ready backlog and its oldest segment's age, for the metrics.
	if a := c.Archiver(); !a.Known || a.Ready < 2 || time.Since(a.OldestReady) < time.Second || a.LastArchived.After(time.Now().Add(-time.Second)) {
		t.Fatalf("while archiving fails: archiver %+v", a)
	}

	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("archiving resumes", func(a *pgdrv1.ArchiveRPO) bool { return a.ReadySegments == 0 && a.Bytes < seg })
}
