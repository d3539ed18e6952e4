package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: runs PostgreSQL (skipped with -short)")
	}
}

// generateSegments runs pgbench until the server has written at least n
// segments on timeline 1, then switches to close the current one.
func generateSegments(t *testing.T, l *lab, n uint32) string {
	t.Helper()
	for i := 0; i < 10; i++ {
		cur := l.pg.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		nm, err := wal.ParseName(cur)
		if err != nil {
			t.Fatal(err)
		}
		if nm.Seg >= n {
			break
		}
		// Each initialization writes ~12 segments; a few transactions
		// on top give the archive some ordinary WAL too.
		l.pg.PGBench(t, "-i", "-q", "-s", "10", "postgres")
		l.pg.PGBench(t, "-n", "-c", "2", "-t", "500", "postgres")
	}
	return l.switchWAL(t)
}

// TestArchiveFileAndS3 is the main path: PostgreSQL's archive_command is
// pgdr-agent wal-push with the daemon running, to a file and an S3
// repository at once; every segment arrives in both, and wal-fetch from each
// returns bytes identical to the original.
func TestArchiveFileAndS3(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	daemonLog := startDaemon(t, l, l.cfg)

	last := generateSegments(t, l, 20)
	l.waitArchived(t, last, 5*time.Minute)
	lastName, _ := wal.ParseName(last)
	if lastName.Seg < 20 {
		t.Fatalf("only %d segments generated, want >= 20", lastName.Seg)
	}

	ls := walList(t, l.cfg)
	if len(ls.Repos) != 2 {
		t.Fatalf("wal-list shows %d repositories, want 2", len(ls.Repos))
	}
	for _, r := range ls.Repos {
		if len(r.Timelines) != 1 {
			t.Fatalf("repo %s: %d timelines, want 1", r.Repo, len(r.Timelines))
		}
		tl := r.Timelines[0]
		if tl.First != "000000010000000000000001" || tl.Last < last || len(tl.Gaps) != 0 {
			t.Fatalf("repo %s: first %s last %s gaps %d; want 000000010000000000000001..%s with no gap", r.Repo, tl.First, tl.Last, len(tl.Gaps), last)
		}
	}
	if !strings.Contains(daemonLog.String(), "pushed") {
		t.Errorf("the daemon pushed nothing; its log:\n%s", daemonLog.String())
	}

	// Fetch every segment back from each repository alone and compare.
	fileOnly := l.writeConfig(t, "file-only.yaml", []string{"file"}, l.identity, 0)
	s3Only := l.writeConfig(t, "s3-only.yaml", []string{"s3"}, l.identity, 0)
	out := t.TempDir()
	for _, cfg := range []string{fileOnly, s3Only} {
		for seg := uint32(1); seg <= lastName.Seg; seg++ {
			name := wal.SegmentName(1, uint64(seg), wal.DefaultSegmentSize)
			orig, err := os.ReadFile(filepath.Join(l.pg.PGData, "pg_wal", name))
			if err != nil {
				t.Fatalf("original %s: %v", name, err)
			}
			dest := filepath.Join(out, name)
			mustAgent(t, "wal-fetch", "--config", cfg, name, dest)
			got, err := os.ReadFile(dest)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, orig) {
				t.Fatalf("%s via %s: fetched %d bytes differ from the original %d bytes", name, filepath.Base(cfg), len(got), len(orig))
			}
			os.Remove(dest)
		}
	}
	r := mustAgent(t, "wal-verify", "--config", l.cfg, "--progress")
	if !strings.Contains(r.stdout, "OK") {
		t.Fatalf("wal-verify: %s", r.stdout)
	}
	// One final progress line per repository, all stored bytes read.
	for _, repo := range []string{"local", "dr"} {
		if !regexp.MustCompile(`wal-verify ` + repo + `: 100\.0%  \d+/\d+ MiB`).MatchString(r.stderr) {
			t.Fatalf("wal-verify --progress: no final progress line for %s on stderr:\n%s", repo, r.stderr)
		}
	}
}

// TestS3OutageCatchUp stops the S3 server mid-run: wal-push fails,
// PostgreSQL keeps the .ready files and marks nothing done; once the server
// is back, archiving catches up with no gap.
func TestS3OutageCatchUp(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{s3: true})
	first := l.switchWAL(t)
	l.waitArchived(t, first, 2*time.Minute)

	l.s3.Stop()
	failedBefore := l.pg.QueryString(t, "SELECT failed_count::text FROM pg_stat_archiver")
	var pending []string
	for range 3 {
		pending = append(pending, l.switchWAL(t))
	}
	testutil.WaitFor(t, 2*time.Minute, "archive failures while S3 is down", func() (bool, error) {
		return l.pg.QueryString(t, "SELECT failed_count::text FROM pg_stat_archiver") != failedBefore, nil
	})
	for _, name := range pending {
		st := filepath.Join(l.pg.PGData, "pg_wal", "archive_status")
		if _, err := os.Stat(filepath.Join(st, name+".ready")); err != nil {
			t.Errorf("%s: .ready file gone while S3 is down: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(st, name+".done")); err == nil {
			t.Errorf("%s was marked done while S3 is down", name)
		}
		if _, err := os.Stat(filepath.Join(l.pg.PGData, "pg_wal", "pgdr_archive_status", name)); err == nil {
			t.Errorf("%s was remembered as pushed while S3 is down", name)
		}
	}
	if last := l.pg.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver"); last >= pending[0] {
		t.Fatalf("PostgreSQL reports %s archived while S3 is down", last)
	}

	l.s3.Restart(t)
	l.waitArchived(t, pending[len(pending)-1], 3*time.Minute)
	r := runAgent(t, nil, "wal-verify", "--config", l.cfg, "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"ok": true`) {
		t.Fatalf("wal-verify after catch-up: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	ls := walList(t, l.cfg)
	for _, rp := range ls.Repos {
		if rp.Timelines[0].Last < pending[len(pending)-1] {
			t.Errorf("repo %s ends at %s, want %s", rp.Repo, rp.Timelines[0].Last, pending[len(pending)-1])
		}
	}
}

// TestRecoveryThroughWalFetch restores a base copy of the cluster and lets
// PostgreSQL replay the archive through restore_command = pgdr-agent
// wal-fetch: recovery reaches the end of the archive (exit 1 there, not an
// error), promotes, and holds every row; later segments come from prefetch.
func TestRecoveryThroughWalFetch(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE ledger(id int primary key, note text)")
	l.pg.Exec(t, "INSERT INTO ledger SELECT g, 'before' FROM generate_series(1, 1000) g")

	restored := pgtest.Empty(t, pgtest.Options{})
	l.pg.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(l.pg.Port), "-U", "postgres",
		"-D", restored.PGData, "-X", "none", "-c", "fast", "--no-sync")

	// WAL after the copy: several segments that only the archive has.
	l.pg.Exec(t, "INSERT INTO ledger SELECT g, 'after' FROM generate_series(1001, 5000) g")
	l.pg.PGBench(t, "-i", "-q", "-s", "5", "postgres")
	l.pg.Exec(t, "INSERT INTO ledger VALUES (5001, 'last')")
	last := l.switchWAL(t)
	l.waitArchived(t, last, 3*time.Minute)
	want := l.pg.QueryString(t, "SELECT count(*)::text || '/' || sum(id)::text FROM ledger")

	conf := restored.LocalConf()
	conf["archive_mode"] = "off"
	conf["restore_command"] = fmt.Sprintf("'%s wal-fetch --config %s %%f %%p'", agentPath(t), l.cfg)
	restored.AppendConf(t, conf)
	if err := os.WriteFile(filepath.Join(restored.PGData, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, restored.Dir)
	restored.Start(t)
	testutil.WaitFor(t, 3*time.Minute, "the end of recovery", func() (bool, error) {
		return restored.QueryString(t, "SELECT pg_is_in_recovery()::text") == "false", nil
	})
	if got := restored.QueryString(t, "SELECT count(*)::text || '/' || sum(id)::text FROM ledger"); got != want {
		t.Fatalf("restored ledger %s, want %s", got, want)
	}
	if got := restored.QueryString(t, "SELECT count(*)::text FROM pgbench_accounts"); got != "500000" {
		t.Fatalf("restored pgbench_accounts has %s rows", got)
	}
	log := restored.Log()
	if !strings.Contains(log, "served from prefetch") {
		t.Errorf("no segment was served from prefetch; server log:\n%s", tail(log, 3000))
	}
	if strings.Contains(log, "wal-fetch failed") {
		t.Errorf("wal-fetch failed during recovery:\n%s", tail(log, 3000))
	}
}
