package e2e

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// restoreLog is where restore --start has pg_ctl write the server's log.
func restoreLog(pgdata string) string { return filepath.Join(pgdata, "pgdr", "restore.log") }

// archivedTimelines lists the timeline directories of the file repository's
// archive, and every file in them that is not a timeline 1 segment.
func (l *lab) archivedTimelines(t *testing.T) (tlis []string, others []string) {
	t.Helper()
	root := filepath.Join(l.repoDir, "main", "wal")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		tlis = append(tlis, e.Name())
		files, err := os.ReadDir(filepath.Join(root, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if e.Name() != "00000001" || strings.Contains(f.Name(), "history") {
				others = append(others, f.Name())
			}
		}
	}
	sort.Strings(tlis)
	return tlis, others
}

// TestRestoredCopyDoesNotArchiveIntoSource is issue 11's item 9 as a new
// user meets it, following docs/backup.md: a point-in-time restore with
// --target-action promote --start into a new directory, no other flag.
// The copy must not archive into the production repository (it used to
// keep archive_mode = on and the production archive_command, and pushed
// 00000002.history and its timeline 2 WAL there), and a later restore of
// production to its latest point must end with production's rows (it used
// to follow the copy's timeline 2 and lose every later production write).
func TestRestoredCopyDoesNotArchiveIntoSource(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	l.backup(t, l.cfg)
	t2 := insertBatch(t, l, 2)
	insertBatch(t, l, 3)
	l.archivePast(t, t2)

	// The copy, as the docs show it: no --no-archive.
	c := pgtest.Empty(t, pgtest.Options{})
	r := runAgent(t, nil, "restore", "--config", l.cfg, "--pgdata", c.PGData, "--target-time", t2, "--target-action", "promote",
		"--start", "--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json")
	if r.code != 0 {
		t.Fatalf("restore of the copy: exit %d\n%s\n%s\nrestore log:\n%s", r.code, r.stdout, tail(r.stderr, 3000), tail(readFile(restoreLog(c.PGData)), 3000))
	}
	if out := parseRestore(t, r); out.Reached.State != "promoted" {
		t.Fatalf("the copy reached %+v, want promoted", out.Reached)
	}
	if got := batchesIn(t, c); got != "1,2" {
		t.Fatalf("the copy holds batches %s, want 1,2", got)
	}
	// The copy is used: it writes and switches segments.
	c.Exec(t, "INSERT INTO batches SELECT 50, g FROM generate_series(1, 100) g")
	copySeg := c.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	if !strings.HasPrefix(copySeg, "00000002") {
		t.Fatalf("the copy switched segment %s, want one on timeline 2", copySeg)
	}
	if mode := c.QueryString(t, "SHOW archive_mode"); mode != "off" {
		t.Errorf("the restored copy runs with archive_mode = %s, want off (it archives into the production repository)", mode)
	}

	// Production goes on and archives; by the time its newest segment is
	// archived the copy's archiver, had it been on, would have pushed its
	// history file long ago.
	insertBatch(t, l, 4)
	insertBatch(t, l, 5)
	l.pg.Exec(t, "INSERT INTO batches SELECT 6, g FROM generate_series(1, 5000) g")
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)
	c.Exec(t, "CHECKPOINT")
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)
	if copied := c.QueryString(t, "SELECT archived_count::text FROM pg_stat_archiver"); copied != "0" {
		t.Errorf("the restored copy archived %s files", copied)
	}
	if tlis, others := l.archivedTimelines(t); len(tlis) != 1 || tlis[0] != "00000001" || len(others) != 0 {
		t.Fatalf("the production repository holds timelines %v and files %v; want timeline 00000001 alone (the copy archived into it)", tlis, others)
	}
	c.Stop(t, "fast")

	// Archiving from a copy is asked for with --archive-config: refused
	// into the source's own archive, done into another repository.
	r = restoreFails(t, l.cfg, pgtest.Empty(t, pgtest.Options{}), "--target-time", t2, "--target-action", "promote", "--archive-config", l.cfg)
	if e := parseRestore(t, r).Error; !strings.Contains(e, "the source's own archive") || !strings.Contains(e, "--replaces-source") {
		t.Fatalf("--archive-config naming the source's repository: error %q, want a refusal pointing at --replaces-source", e)
	}
	copyRepo := filepath.Join(l.dir, "copyrepo")
	copyCfg := filepath.Join(l.dir, "copy.yaml")
	os.WriteFile(copyCfg, []byte(strings.Replace(readFile(l.cfg), "file://"+l.repoDir+"\n", "file://"+copyRepo+"\n", 1)), 0o644)
	pgtest.Chown(t, copyCfg)
	c2 := pgtest.Empty(t, pgtest.Options{})
	r = runAgent(t, nil, "restore", "--config", l.cfg, "--pgdata", c2.PGData, "--target-time", t2, "--target-action", "promote", "--archive-config", copyCfg,
		"--start", "--port", fmt.Sprint(c2.Port), "--socket-dir", c2.Dir, "--wait-timeout", "3m", "--json")
	if r.code != 0 {
		t.Fatalf("restore of a copy archiving into its own repository: exit %d\n%s\n%s\nrestore log:\n%s", r.code, r.stdout, tail(r.stderr, 3000), tail(readFile(restoreLog(c2.PGData)), 3000))
	}
	copyHistory := filepath.Join(copyRepo, "main", "wal", "00000002", "00000002.history")
	testutil.WaitFor(t, 2*time.Minute, "the copy to archive 00000002.history into its own repository", func() (bool, error) {
		_, err := os.Stat(copyHistory)
		return err == nil, fmt.Errorf("%v; copy's restore log:\n%s", err, tail(readFile(restoreLog(c2.PGData)), 1500))
	})
	c2.Stop(t, "fast")
	if tlis, others := l.archivedTimelines(t); len(tlis) != 1 || len(others) != 0 {
		t.Fatalf("after a copy archived into its own repository, the production repository holds timelines %v and files %v", tlis, others)
	}

	// Production's latest point: every production row.
	want := l.pg.QueryString(t, "SELECT count(*)::text FROM batches")
	wantBatches := batchesIn(t, l.pg)
	p, _ := l.restoreJSON(t, l.cfg)
	if got := p.QueryString(t, "SELECT count(*)::text FROM batches"); got != want {
		t.Fatalf("latest-point restore of production holds %s rows (batches %s), production has %s (batches %s)", got, batchesIn(t, p), want, wantBatches)
	}
	p.Stop(t, "fast")
}

// TestRestoreTimelineFailoverAndFork: a failover (standby promoted after
// the primary stopped) gives a linear history that a restore follows to
// the new timeline without any flag. When the old primary comes back and
// goes on writing on timeline 1 (a fork: both branches archived), a
// restore without --target-timeline refuses and names both branches;
// --target-timeline chooses either; wal-list flags timeline 2 as a fork.
func TestRestoreTimelineFailoverAndFork(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	id := l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	sb := l.newStandby(t, nil)
	testutil.WaitFor(t, 60*time.Second, "the standby to replay batch 2", func() (bool, error) {
		got := batchesIn(t, sb)
		return got == "1,2", fmt.Errorf("standby has batches %q", got)
	})
	l.pg.Stop(t, "fast")
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "120", "promote")
	history := filepath.Join(l.repoDir, "main", "wal", "00000002", "00000002.history")
	testutil.WaitFor(t, 2*time.Minute, "the promoted standby to archive 00000002.history", func() (bool, error) {
		_, err := os.Stat(history)
		return err == nil, fmt.Errorf("%v; standby log:\n%s", err, tail(sb.Log(), 1500))
	})
	sb.Exec(t, "INSERT INTO batches SELECT 3, g FROM generate_series(1, 100) g")
	seg := sb.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	testutil.WaitFor(t, 2*time.Minute, "the promoted standby to archive "+seg, func() (bool, error) {
		last := sb.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		return len(last) >= 24 && last[:24] >= seg, fmt.Errorf("last archived %q; standby log:\n%s", last, tail(sb.Log(), 1500))
	})

	// Linear: timeline 1, then 2. No flag needed.
	c, out := l.restoreJSON(t, l.cfg)
	if out.Restore.Backup != id || out.Restore.Timeline != 2 {
		t.Fatalf("restored backup %s following timeline %d, want %s following timeline 2", out.Restore.Backup, out.Restore.Timeline, id)
	}
	if got := batchesIn(t, c); got != "1,2,3" {
		t.Fatalf("after a failover, the latest-point restore holds batches %s, want 1,2,3 (the new primary's timeline 2)", got)
	}
	c.Stop(t, "fast")
	if ls := walList(t, l.cfg); len(ls.Repos) != 1 || len(ls.Repos[0].Timelines) != 2 || ls.Repos[0].Timelines[1].Parent != 1 || ls.Repos[0].Timelines[1].Fork != "" {
		t.Fatalf("wal-list after a failover: %+v; want timelines 1 and 2, 2 from 1 and no fork", ls.Repos)
	}

	// The old primary comes back as a primary and writes on timeline 1.
	l.pg.Start(t)
	insertBatch(t, l, 98)
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)

	fc := pgtest.Empty(t, pgtest.Options{})
	r := restoreFails(t, l.cfg, fc)
	e := parseRestore(t, r).Error
	for _, w := range []string{"--target-timeline", "timeline 1", "timeline 2"} {
		if !strings.Contains(e, w) {
			t.Fatalf("restore with two branches after the backup: error %q does not mention %q", e, w)
		}
	}
	wantDirState(t, "refused restore", fc.PGData, true)

	ls := walList(t, l.cfg)
	if len(ls.Repos) != 1 || len(ls.Repos[0].Timelines) != 2 || ls.Repos[0].Timelines[1].Fork == "" {
		t.Fatalf("wal-list with timeline 1 going on after timeline 2 branched off: %+v; want timeline 2 flagged as a fork", ls.Repos)
	}
	if out := mustAgent(t, "wal-list", "--config", l.cfg).stdout; !strings.Contains(out, "fork") {
		t.Fatalf("wal-list does not show the fork:\n%s", out)
	}

	for _, tc := range []struct{ timeline, want string }{{"2", "1,2,3"}, {"latest", "1,2,3"}, {"current", "1,2,98"}, {"1", "1,2,98"}} {
		c, _ := l.restoreJSON(t, l.cfg, "--target-timeline", tc.timeline)
		if got := batchesIn(t, c); got != tc.want {
			t.Fatalf("--target-timeline %s: batches %s, want %s", tc.timeline, got, tc.want)
		}
		c.Stop(t, "fast")
	}
	bad := pgtest.Empty(t, pgtest.Options{})
	r = restoreFails(t, l.cfg, bad, "--target-timeline", "7")
	if e := parseRestore(t, r).Error; !strings.Contains(e, "timeline 7") {
		t.Fatalf("--target-timeline 7 (not in the archive): error %q, want it to name timeline 7", e)
	}
}

// TestRestoreStartLogInDataDirectory: restore --start run as the server's
// user into a data directory whose parent that user cannot write (as
// /var/lib/postgresql/15 owned by root) starts the server: its log goes to
// <pgdata>/pgdr/restore.log, which backups leave out.
func TestRestoreStartLogInDataDirectory(t *testing.T) {
	skipShort(t)
	cred := pgtest.Credential(t)
	if cred == nil {
		t.Skip("needs root: the data directory's parent must be another user's")
	}
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	l.backup(t, l.cfg)
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)

	parent, err := os.MkdirTemp("", "pgdr-rootparent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	pgdata := filepath.Join(parent, "main")
	if err := os.Mkdir(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, pgdata)
	c := pgtest.Empty(t, pgtest.Options{})
	c.PGData = pgdata
	r := runAgentPG(t, "restore", "--config", l.cfg, "--pgdata", pgdata, "--start", "--target-immediate", "--target-action", "promote",
		"--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json")
	if r.code != 0 {
		t.Fatalf("restore --start as the server's user under a root-owned parent: exit %d\n%s\n%s", r.code, r.stdout, tail(r.stderr, 3000))
	}
	if got := batchesIn(t, c); got != "1" {
		t.Fatalf("restored batches %s, want 1", got)
	}
	if !strings.Contains(readFile(restoreLog(pgdata)), "database system is ready") {
		t.Fatalf("%s does not hold the server's log:\n%s", restoreLog(pgdata), readFile(restoreLog(pgdata)))
	}
	c.Stop(t, "fast")
}

// TestRestoreSkipsAbandonedBranchBackup: the standby is promoted while the
// old primary, not yet fenced, goes on and completes backup B on timeline
// 1 after the switch. The new primary took backup C on timeline 2 before.
// A default restore must not pick B and stay on timeline 1 (it used to,
// and reported success without any write of timeline 2): it skips B and
// restores C along timeline 2. Restoring B explicitly is refused, naming
// the situation, and --target-timeline 2 cannot use it.
func TestRestoreSkipsAbandonedBranchBackup(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	sb := l.newStandby(t, nil)
	testutil.WaitFor(t, 60*time.Second, "the standby to replay batch 2", func() (bool, error) {
		got := batchesIn(t, sb)
		return got == "1,2", fmt.Errorf("standby has batches %q", got)
	})
	// Promoted with the old primary still running (its lease not yet
	// expired, or only its agent died).
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "120", "promote")
	history := filepath.Join(l.repoDir, "main", "wal", "00000002", "00000002.history")
	testutil.WaitFor(t, 2*time.Minute, "the promoted standby to archive 00000002.history", func() (bool, error) {
		_, err := os.Stat(history)
		return err == nil, fmt.Errorf("%v; standby log:\n%s", err, tail(sb.Log(), 1500))
	})
	sb.Exec(t, "INSERT INTO batches SELECT 3, g FROM generate_series(1, 100) g")
	sbcfg := l.writeNodeConfig(t, "standby.yaml", sb, []string{"file"})
	c := l.backup(t, sbcfg)

	// The old primary writes and completes backup B on timeline 1.
	insertBatch(t, l, 98)
	b := l.backup(t, l.cfg)
	if b <= c {
		t.Fatalf("backup %s of the old primary is not newer than backup %s of the new one", b, c)
	}
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)

	sb.Exec(t, "INSERT INTO batches SELECT 4, g FROM generate_series(1, 100) g")
	t4 := sb.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	sb.Exec(t, "INSERT INTO batches SELECT 5, g FROM generate_series(1, 100) g")
	seg := sb.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	testutil.WaitFor(t, 2*time.Minute, "the promoted standby to archive "+seg, func() (bool, error) {
		last := sb.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		return len(last) >= 24 && last[:24] >= seg, fmt.Errorf("last archived %q; standby log:\n%s", last, tail(sb.Log(), 1500))
	})

	r, out := l.restoreJSON(t, l.cfg)
	got := batchesIn(t, r)
	r.Stop(t, "fast")
	if out.Restore.Backup != c || out.Restore.Timeline != 2 || got != "1,2,3,4,5" {
		t.Fatalf("default restore: backup %s following timeline %d, batches %s; want backup %s following timeline 2 with batches 1,2,3,4,5 (backup %s lies on the abandoned timeline 1)",
			out.Restore.Backup, out.Restore.Timeline, got, c, b)
	}
	// A time target after both backups' ends picks C too.
	r, out = l.restoreJSON(t, l.cfg, "--target-time", t4, "--target-action", "promote")
	got = batchesIn(t, r)
	r.Stop(t, "fast")
	if out.Restore.Backup != c || out.Restore.Timeline != 2 || got != "1,2,3,4" {
		t.Fatalf("restore to %s: backup %s following timeline %d, batches %s; want backup %s following timeline 2 with batches 1,2,3,4",
			t4, out.Restore.Backup, out.Restore.Timeline, got, c)
	}

	fc := pgtest.Empty(t, pgtest.Options{})
	e := parseRestore(t, restoreFails(t, l.cfg, fc, "--backup", b)).Error
	if want := "backup " + b + " was taken on timeline 1 after timeline 2 branched off it"; !strings.Contains(e, want) || !strings.Contains(e, "--target-timeline current") {
		t.Fatalf("restore of backup %s: error %q, want it to say %q", b, e, want)
	}
	wantDirState(t, "refused restore", fc.PGData, true)
	e = parseRestore(t, restoreFails(t, l.cfg, pgtest.Empty(t, pgtest.Options{}), "--backup", b, "--target-timeline", "2")).Error
	if !strings.Contains(e, "does not branch") {
		t.Fatalf("restore of backup %s along timeline 2: error %q, want a refusal", b, e)
	}
	// Knowingly: the old primary's branch.
	r, _ = l.restoreJSON(t, l.cfg, "--backup", b, "--target-timeline", "current", "--target-immediate")
	if got := batchesIn(t, r); got != "1,2,98" {
		t.Fatalf("backup %s with --target-timeline current: batches %s, want 1,2,98", b, got)
	}
	r.Stop(t, "fast")
}

// TestRestoreStartKeepsSupplementaryGroups: restore --start run as root
// starts PostgreSQL as the data directory's owner with that user's
// supplementary groups. An identity file the owner reads only through one
// of them (root's, mode 0640, group shared with postgres) passes the
// up-front ownership check, and wal-fetch in restore_command must read it
// too (it used to fail with EACCES: Go's setgroups dropped every group).
func TestRestoreStartKeepsSupplementaryGroups(t *testing.T) {
	skipShort(t)
	if pgtest.Credential(t) == nil {
		t.Skip("needs root: the server runs as another user")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres account: %v", err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	var group string
	for _, g := range gids {
		if g != u.Gid {
			group = g
		}
	}
	if group == "" {
		t.Skipf("user postgres has no supplementary group (groups %v)", gids)
	}
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)

	gid, _ := strconv.Atoi(group)
	if err := os.Chown(l.identity, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(l.identity, 0o640); err != nil {
		t.Fatal(err)
	}
	c, _ := l.restoreJSON(t, l.cfg, "--target-action", "promote")
	if got := batchesIn(t, c); got != "1,2" {
		t.Fatalf("restored batches %s, want 1,2", got)
	}
	c.Stop(t, "fast")
}
