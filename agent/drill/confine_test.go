package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestDrillConfinesRestoredSettings: settings restored with the source's
// postgresql.conf that would make the scratch server act on production:
// a logical replication subscription (its apply worker would take the
// publisher's slot and consume the changes meant for the real
// subscriber), recovery_end_command and external_pid_file (a command and
// a file of the production host), and data_directory naming the
// production data directory (the scratch postmaster would run on it).
func TestDrillConfinesRestoredSettings(t *testing.T) {
	l := newLab(t)
	pub := pgtest.New(t, pgtest.Options{Conf: map[string]string{"wal_level": "logical"}})
	pub.Start(t)
	pub.Exec(t, "CREATE TABLE items(id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE items; INSERT INTO items VALUES (1)")
	l.pg.Exec(t, "CREATE TABLE items(id int PRIMARY KEY)")
	l.pg.Exec(t, fmt.Sprintf("CREATE SUBSCRIPTION s CONNECTION 'host=127.0.0.1 port=%d user=postgres dbname=postgres' PUBLICATION p", pub.Port))
	testutil.WaitFor(t, 60*time.Second, "the subscription's first row", func() (bool, error) {
		return l.pg.QueryString(t, "SELECT count(*)::text FROM items") == "1", nil
	})

	// Settings of the production host, kept in the backed-up
	// postgresql.conf (the running source does not reload them).
	prodPID := filepath.Join(l.dir, "production.pid")
	if err := os.WriteFile(prodPID, []byte("production's pid file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(l.dir, "recovery-end-command-ran")
	l.pg.AppendConf(t, map[string]string{
		"external_pid_file":    "'" + prodPID + "'",
		"recovery_end_command": "'touch " + marker + "'",
		// The host's huge page pool is sized for the production server,
		// which fails to start (huge_pages = on) once another took it.
		"huge_pages": "'try'",
	})
	l.backup(t)
	l.pg.Exec(t, "CREATE TABLE later(id int)")
	target, err := time.Parse(time.RFC3339Nano, l.pg.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"))
	if err != nil {
		t.Fatal(err)
	}
	// The real subscriber pauses: its slot on the publisher is idle, and
	// the publisher's new row waits there for it.
	l.pg.Exec(t, "ALTER SUBSCRIPTION s DISABLE")
	pub.Exec(t, "INSERT INTO items VALUES (2)")
	l.archiveAll(t)
	slotLSN := func() string {
		return pub.QueryString(t, "SELECT coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE slot_name = 's'")
	}
	before := slotLSN()

	t.Run("subscription, recovery_end_command, external_pid_file", func(t *testing.T) {
		// Watch the publisher while the drill runs: any walsender is the
		// scratch copy's apply worker.
		var seen atomic.Int32
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			conn := pub.Conn(t)
			defer conn.Close(context.Background())
			for {
				var n int32
				if err := conn.QueryRow(context.Background(), "SELECT count(*)::int FROM pg_stat_replication").Scan(&n); err == nil && n > 0 {
					seen.Store(n)
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		// The check keeps the promoted copy up a while: long enough for a
		// logical replication launcher to start its apply worker.
		wait := Check{Name: "wait", Database: "postgres", SQL: "SELECT pg_sleep(5)"}
		hp := Check{Name: "huge pages", Database: "postgres", SQL: "SHOW huge_pages", Expect: "off"}
		res := l.run(t, Options{TargetTime: &target, Checks: []Check{wait, hp}})
		close(stop)
		<-done
		if !res.OK {
			t.Errorf("drill failed: %s", res.Reason)
		}
		if n := seen.Load(); n > 0 {
			t.Errorf("the scratch copy's subscription connected to the publisher (%d walsender(s)): a drill reaches production", n)
		}
		if after := slotLSN(); after != before {
			t.Errorf("the publisher's slot s moved from %s to %s during the drill: the real subscriber lost changes", before, after)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the restored recovery_end_command ran on the drill's host (%s exists)", marker)
		}
		if b, err := os.ReadFile(prodPID); err != nil || string(b) != "production's pid file\n" {
			t.Errorf("production's external_pid_file %s was overwritten or removed by the scratch server: %q, %v", prodPID, b, err)
		}
	})

	t.Run("data_directory", func(t *testing.T) {
		// The source's postgresql.conf names its own data directory (valid
		// there); the production server is down (a drill node, or a
		// stopped member).
		l.pg.AppendConf(t, map[string]string{"data_directory": "'" + l.pg.PGData + "'"})
		m := l.backup(t)
		l.pg.Stop(t, "fast")
		defer l.pg.Start(t)
		res := l.run(t, Options{BackupID: m.ID})
		pid := filepath.Join(l.pg.PGData, "postmaster.pid")
		if _, err := os.Stat(pid); !errors.Is(err, os.ErrNotExist) {
			l.pg.Stop(t, "immediate")
			t.Fatalf("the drill (ok %v, reason %q) started a postmaster on the production data directory %s and left it running",
				res.OK, res.Reason, l.pg.PGData)
		}
		if !res.OK {
			t.Errorf("drill failed: %s", res.Reason)
		}
		if log, _ := os.ReadFile(filepath.Join(l.pg.Dir, "postgres.log")); strings.Count(string(log), "database system is ready") > 1 {
			t.Errorf("the production data directory was started during the drill:\n%s", log)
		}
	})
}

// TestDrillRefusesScratchThroughBindMount: a scratch path under a bind
// mount of the production data directory's parent names the same
// directories by another path, which neither the path nor its symbolic
// links show: the drill compares the directories themselves.
func TestDrillRefusesScratchThroughBindMount(t *testing.T) {
	l := newLab(t)
	l.backup(t)
	l.archiveAll(t)
	mnt := pgtest.OwnedDir(t, "pgdr-drill-bind-")
	if out, err := exec.Command("mount", "--bind", l.pg.Dir, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	// The production WAL directory also mounted on its own elsewhere.
	walMnt := pgtest.OwnedDir(t, "pgdr-drill-walbind-")
	if out, err := exec.Command("mount", "--bind", filepath.Join(l.pg.PGData, "pg_wal"), walMnt).CombinedOutput(); err != nil {
		t.Fatalf("bind-mounting pg_wal: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", walMnt).Run() })
	for _, c := range []struct{ scratch, want string }{
		{filepath.Join(mnt, "pgdata", "drill"), "inside the production data directory"},
		{filepath.Join(mnt, "pgdata", "pg_wal", "drill"), "inside the production WAL directory"},
		{filepath.Join(walMnt, "drill"), "inside the production WAL directory"},
	} {
		res, err := Run(context.Background(), l.deps(t), l.opts(Options{Scratch: c.scratch}))
		if err == nil {
			t.Errorf("scratch %s (%s through a bind mount): drill ran (ok %v, scratch %s), want refused", c.scratch, c.want, res.OK, res.Scratch)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("scratch %s: error %q does not say %q", c.scratch, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(l.pg.PGData, "pg_wal", "drill")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the drill created %s/pg_wal/drill in the production WAL directory (%v)", l.pg.PGData, err)
	}
	if _, err := os.Stat(filepath.Join(l.pg.PGData, "drill")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the drill created %s/drill in the production data directory (%v)", l.pg.PGData, err)
	}
}

// TestDrillFailsOnArchiveGap: a segment missing from the middle of the
// archive ends recovery to the latest WAL early, and PostgreSQL promotes
// there as if that were the end: the drill must fail rather than pass
// with the rows after the gap silently missing.
func TestDrillFailsOnArchiveGap(t *testing.T) {
	l := newLab(t)
	l.pg.Exec(t, "CREATE TABLE t(id int)")
	m := l.backup(t)
	for i := 0; i < 3; i++ {
		l.pg.Exec(t, "INSERT INTO t SELECT generate_series(1, 100)")
		l.archiveAll(t)
	}
	dir := filepath.Join(l.repoDir, "main", "wal", fmt.Sprintf("%08X", m.Timeline))
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if len(e.Name()) == 24 && e.Name() > m.StopLSN.Segment(m.Timeline, m.SegmentSize) {
			segs = append(segs, e.Name())
		}
	}
	if len(segs) < 3 {
		t.Fatalf("archive %s holds %v after the backup, want at least 3 segments", dir, segs)
	}
	gone := segs[len(segs)/2]
	if err := os.Rename(filepath.Join(dir, gone), filepath.Join(l.dir, gone)); err != nil {
		t.Fatal(err)
	}
	res := l.run(t, Options{})
	if res.OK || !strings.Contains(res.Reason, gone) {
		t.Fatalf("drill with %s missing from the archive: ok %v, reason %q, recovery LSN %s; want failed naming the gap",
			gone, res.OK, res.Reason, res.RecoveryLSN)
	}
}
