package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// partialRestore is what restore --json reports about a stream partial.
type partialRestore struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Restore struct {
		IncludePartial bool                `json:"include_partial"`
		Partial        *walship.PartialUse `json:"partial"`
		PartialNote    string              `json:"partial_note"`
		Timeline       uint32              `json:"timeline"`
		RecoveryConf   []string            `json:"recovery_settings"`
	} `json:"restore"`
	Reached struct {
		State   string              `json:"state"`
		Partial *walship.PartialUse `json:"partial"`
	} `json:"reached"`
}

// restorePartial restores the latest point with args into a fresh
// directory, starts it, and returns it with restore's report.
func (l *lab) restorePartial(t *testing.T, cfg string, args ...string) (*pgtest.Cluster, partialRestore, string) {
	t.Helper()
	c := pgtest.Empty(t, pgtest.Options{})
	base := []string{"restore", "--config", cfg, "--pgdata", c.PGData, "--no-archive", "--start",
		"--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json"}
	r := runAgent(t, nil, append(base, args...)...)
	var out partialRestore
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 0 || !out.OK {
		t.Fatalf("restore %v: exit %d (%v)\n%s\n%s\nrestore log:\n%s", args, r.code, err, r.stdout, tail(r.stderr, 3000), tail(readFile(restoreLog(c.PGData)), 3000))
	}
	return c, out, r.stderr
}

// pushPartial uploads the first n bytes of the live segment name of node
// as its stream partial, as the WAL receiver does (walship.PushPartial),
// through the configuration cfg.
func pushPartial(t *testing.T, l *lab, cfg string, node *pgtest.Cluster, name string, n int) {
	t.Helper()
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sh, err := walship.New(ctx, c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(node.PGData, "pg_wal", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.PushPartial(ctx, name, b[:n]); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, l.repoDir) // wal-fetch runs as the server's user
}

// flushedSegment returns the current WAL segment of node and how many of
// its bytes are flushed: the prefix a receiver that has all flushed WAL
// holds.
func flushedSegment(t *testing.T, node *pgtest.Cluster) (string, int) {
	t.Helper()
	s := node.QueryString(t, "SELECT file_name || ' ' || file_offset FROM pg_walfile_name_offset(pg_current_wal_flush_lsn())")
	name, off, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(off)
	if err != nil || n == 0 {
		t.Fatalf("pg_walfile_name_offset = %q", s)
	}
	return name, n
}

func rows(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.QueryString(t, "SELECT coalesce(string_agg(i::text, ',' ORDER BY i), '') FROM trickle")
}

// TestRestoreLatestWithStreamPartial: trickle commits, the last ones only
// in the segment the primary was still writing; the receiver's partial
// copy of that segment holds some of them; the primary is killed. A
// restore of the latest point (partials on by default) has every commit
// the partial holds and reports its bytes; with --include-partial=false it
// ends at the archive. A target with --include-partial is refused. With
// an S3 repository too, the partial is read from S3 when only S3 holds it.
func TestRestoreLatestWithStreamPartial(t *testing.T) {
	skipShort(t)
	t.Run("file", func(t *testing.T) { restoreLatestWithPartial(t, false) })
	t.Run("file+s3", func(t *testing.T) { restoreLatestWithPartial(t, true) })
}

func restoreLatestWithPartial(t *testing.T, s3 bool) {
	l := newLab(t, labOpts{s3: s3})
	l.pg.Exec(t, "CREATE TABLE trickle(i int PRIMARY KEY)")
	l.backup(t, l.cfg)
	for i := 1; i <= 3; i++ {
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle VALUES (%d)", i))
	}
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)
	l.pg.Exec(t, "DELETE FROM switch_marker")
	for i := 4; i <= 8; i++ {
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle VALUES (%d)", i))
	}
	seg, n := flushedSegment(t, l.pg)
	pushPartial(t, l, l.cfg, l.pg, seg, n)
	wantRepo := "local"
	if s3 {
		// Only the S3 repository holds it now.
		wantRepo = "dr"
		if err := os.Remove(filepath.Join(l.repoDir, "main", "wal-stream", seg[:8], seg+".partial")); err != nil {
			t.Fatal(err)
		}
	}
	if ls := mustAgent(t, "wal-list", "--config", l.cfg).stdout; !strings.Contains(ls, fmt.Sprintf("stream partial %s (timeline 1): %d bytes", seg, n)) {
		t.Fatalf("wal-list does not show the stream partial %s:\n%s", seg, ls)
	}
	// Committed after the receiver's last upload: lost with the region.
	for i := 9; i <= 10; i++ {
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle VALUES (%d)", i))
	}
	l.pg.Stop(t, "immediate")

	c, out, _ := l.restorePartial(t, l.cfg)
	if got := rows(t, c); got != "1,2,3,4,5,6,7,8" {
		t.Fatalf("restored with the stream partial: rows %s, want 1..8 (every commit the partial holds)\nrestore log:\n%s", got, tail(readFile(restoreLog(c.PGData)), 3000))
	}
	c.Stop(t, "fast")
	p := out.Restore.Partial
	if !out.Restore.IncludePartial || p == nil || p.Segment != seg || p.Bytes != int64(n) || p.Timeline != 1 || uint64(p.ToLSN-p.FromLSN) != uint64(n) || p.Repo != wantRepo {
		t.Fatalf("restore's report of the partial: include=%v %+v (note %q), want segment %s, %d bytes, from repository %s", out.Restore.IncludePartial, p, out.Restore.PartialNote, seg, n, wantRepo)
	}
	if r := out.Reached.Partial; r == nil || r.Bytes != int64(n) || r.Segment != seg {
		t.Fatalf("recovery's report of the partial served: %+v", r)
	}
	found := false
	for _, s := range out.Restore.RecoveryConf {
		found = found || strings.Contains(s, "wal-fetch") && strings.Contains(s, "--include-partial")
	}
	if !found {
		t.Fatalf("restore_command without --include-partial: %v", out.Restore.RecoveryConf)
	}

	c, out, _ = l.restorePartial(t, l.cfg, "--include-partial=false")
	if got := rows(t, c); got != "1,2,3" {
		t.Fatalf("restored without the stream partial: rows %s, want 1..3 (the archive)", got)
	}
	c.Stop(t, "fast")
	if out.Restore.IncludePartial || out.Restore.Partial != nil || out.Reached.Partial != nil {
		t.Fatalf("--include-partial=false reported a partial: %+v", out)
	}

	// Human output.
	c = pgtest.Empty(t, pgtest.Options{})
	r := runAgent(t, nil, "restore", "--config", l.cfg, "--pgdata", c.PGData, "--no-archive")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%d bytes", n)) || !strings.Contains(r.stdout, seg) {
		t.Fatalf("restore's text output does not report the partial (%s, %d bytes): exit %d\n%s\n%s", seg, n, r.code, r.stdout, tail(r.stderr, 2000))
	}
	t.Logf("restore output:\n%s", r.stdout)

	c = pgtest.Empty(t, pgtest.Options{})
	fr := restoreFails(t, l.cfg, c, "--target-immediate", "--include-partial")
	if !strings.Contains(fr.stdout, "--include-partial") {
		t.Fatalf("a target with --include-partial: %s", fr.stdout)
	}
	if s3 {
		return
	}
	// A damaged partial: the restore refuses before writing anything, and
	// wal-fetch exits >= 126, never 1.
	flipByte(t, filepath.Join(l.repoDir, "main", "wal-stream", seg[:8], seg+".partial"))
	fr = restoreFails(t, l.cfg, c)
	if !strings.Contains(fr.stdout, "--include-partial=false") {
		t.Fatalf("restore with a damaged partial does not say how to go without it: %s", fr.stdout)
	}
	dest := filepath.Join(l.dir, "fetched")
	if r := runAgentPG(t, "wal-fetch", "--config", l.cfg, "--include-partial", seg, dest); r.code < 126 {
		t.Fatalf("wal-fetch --include-partial of a damaged partial: exit %d, want >= 126\n%s", r.code, tail(r.stderr, 2000))
	}
	if r := runAgentPG(t, "wal-fetch", "--config", l.cfg, seg, dest); r.code != 1 {
		t.Fatalf("wal-fetch without --include-partial: exit %d, want 1 (not in the archive)\n%s", r.code, tail(r.stderr, 2000))
	}
}

// TestRestoreNeverUsesAnOldTimelinesPartial: the receiver's partial of
// timeline 1 holds commits the old primary made after a standby stopped
// receiving; the standby is promoted (timeline 2, its history archived).
// No restore ever replays that partial: the latest point follows timeline
// 2 (and uses timeline 2's partial once there is one), and a restore
// along timeline 1 (--target-timeline 1) ends at the archive, its
// wal-fetch refusing the old timeline's partial. The s3 variant restores
// from the S3 repository alone (its timelines read by ListObjectsV2).
func TestRestoreNeverUsesAnOldTimelinesPartial(t *testing.T) {
	skipShort(t)
	t.Run("file", func(t *testing.T) { oldTimelinePartial(t, false) })
	t.Run("s3", func(t *testing.T) { oldTimelinePartial(t, true) })
}

func oldTimelinePartial(t *testing.T, s3 bool) {
	l := newLab(t, labOpts{s3: s3})
	rcfg := l.cfg // what the restores read
	if s3 {
		rcfg = l.writeConfig(t, "s3only.yaml", []string{"s3"}, l.identity, 0)
	}
	l.pg.Exec(t, "CREATE TABLE trickle(i int PRIMARY KEY)")
	l.backup(t, l.cfg)
	sb := l.newStandby(t, nil)
	for i := 1; i <= 3; i++ {
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle VALUES (%d)", i))
	}
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)
	lsn := l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	testutil.WaitFor(t, 60*time.Second, "the standby to replay "+lsn, func() (bool, error) {
		ok := sb.QueryString(t, fmt.Sprintf("SELECT (pg_last_wal_replay_lsn() >= '%s'::pg_lsn)::text", lsn))
		return ok == "true", fmt.Errorf("replayed: %s", ok)
	})
	sb.Stop(t, "immediate")
	// Lost in the failover: only in the old primary's WAL, and in the
	// receiver's partial of timeline 1.
	for i := 4; i <= 6; i++ {
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle VALUES (%d)", i))
	}
	seg1, n1 := flushedSegment(t, l.pg)
	pushPartial(t, l, l.cfg, l.pg, seg1, n1)
	l.pg.Stop(t, "immediate")

	f, err := os.OpenFile(filepath.Join(sb.PGData, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("primary_conninfo = ''\nrestore_command = ''\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sb.Start(t)
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "120", "promote")
	hist := filepath.Join(l.repoDir, "main", "wal", "00000002", "00000002.history")
	testutil.WaitFor(t, 60*time.Second, "timeline 2's history file archived", func() (bool, error) {
		_, err := os.Stat(hist)
		return err == nil, err
	})
	sb.Exec(t, "INSERT INTO trickle VALUES (100)")

	c, out, _ := l.restorePartial(t, rcfg)
	if got := rows(t, c); got != "1,2,3" {
		t.Fatalf("latest point without a partial of timeline 2: rows %s, want 1,2,3\nrestore log:\n%s", got, tail(readFile(restoreLog(c.PGData)), 3000))
	}
	c.Stop(t, "fast")
	if out.Restore.Timeline != 2 || out.Restore.Partial != nil || out.Reached.Partial != nil || !out.Restore.IncludePartial {
		t.Fatalf("latest point, no partial of timeline 2: %+v", out)
	}

	c, out, _ = l.restorePartial(t, rcfg, "--target-timeline", "1")
	log := readFile(restoreLog(c.PGData))
	if got := rows(t, c); got != "1,2,3" {
		t.Fatalf("along timeline 1: rows %s, want 1,2,3 (4..6 are only in timeline 1's partial)\nrestore log:\n%s", got, tail(log, 3000))
	}
	c.Stop(t, "fast")
	if out.Restore.Partial != nil || out.Reached.Partial != nil || !strings.Contains(out.Restore.PartialNote, "not the newest") {
		t.Fatalf("along timeline 1: partial %+v, served %+v, note %q; want none, saying timeline 1 is not the newest", out.Restore.Partial, out.Reached.Partial, out.Restore.PartialNote)
	}
	if !strings.Contains(log, "not using the stream partial") || !strings.Contains(log, seg1) {
		t.Fatalf("wal-fetch did not say it refused %s's partial:\n%s", seg1, tail(log, 3000))
	}

	seg2, n2 := flushedSegment(t, sb)
	pushPartial(t, l, l.cfg, sb, seg2, n2)
	sb.Stop(t, "immediate")
	c, out, _ = l.restorePartial(t, rcfg)
	if got := rows(t, c); got != "1,2,3,100" {
		t.Fatalf("latest point with timeline 2's partial: rows %s, want 1,2,3,100\nrestore log:\n%s", got, tail(readFile(restoreLog(c.PGData)), 3000))
	}
	c.Stop(t, "fast")
	if p := out.Reached.Partial; p == nil || p.Timeline != 2 || p.Segment != seg2 || p.Bytes != int64(n2) {
		t.Fatalf("timeline 2's partial served: %+v, want %s, %d bytes", p, seg2, n2)
	}
}
