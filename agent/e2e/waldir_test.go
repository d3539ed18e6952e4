package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestBackupRestoreSymlinkedWAL: a cluster made with initdb -X keeps its
// WAL behind a pg_wal link. Its backup records pg_wal and
// pg_wal/archive_status as directories, the restore makes them as real
// directories inside the new data directory (nothing is written where the
// source's WAL is), and the restored cluster starts with the data.
func TestBackupRestoreSymlinkedWAL(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{waldir: true})
	walDir := filepath.Join(l.dir, "wal")
	if dst, err := os.Readlink(filepath.Join(l.pg.PGData, "pg_wal")); err != nil || dst != walDir {
		t.Fatalf("pg_wal of the source is not a link to %s: %q %v", walDir, dst, err)
	}
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	id := l.backup(t, l.cfg)
	insertBatch(t, l, 2)
	l.waitArchived(t, l.switchWAL(t), 2*time.Minute)

	m := loadManifest(t, l.cfg, id)
	dirs := map[string]bool{}
	for _, d := range m.Dirs {
		dirs[d.Path] = true
	}
	if !dirs["pg_wal"] || !dirs["pg_wal/archive_status"] {
		t.Errorf("the manifest does not record pg_wal and pg_wal/archive_status: %v", m.Dirs)
	}
	before, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}

	c := l.restoreTo(t, l.cfg, "--target-action", "promote")
	if got := batchesIn(t, c); got != "1,2" {
		t.Fatalf("the restored cluster holds batches %q, want 1,2", got)
	}
	c.Exec(t, "INSERT INTO batches VALUES (3, 1)") // writable, WAL written
	for _, d := range []string{"pg_wal", "pg_wal/archive_status"} {
		fi, err := os.Lstat(filepath.Join(c.PGData, d))
		if err != nil || !fi.IsDir() {
			t.Errorf("restored %s is not a directory: %v %v", d, fi, err)
		}
	}
	after, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) < len(before) {
		t.Errorf("the source's WAL directory lost files: %d before the restore, %d after", len(before), len(after))
	}
	c.Stop(t, "fast")

	// --waldir: pg_wal is a link to the directory given, where the
	// restored server writes its WAL.
	newWAL := filepath.Join(pgtest.OwnedDir(t, "pgdr-waldir-"), "wal")
	c = l.restoreTo(t, l.cfg, "--target-action", "promote", "--waldir", newWAL)
	if dst, err := os.Readlink(filepath.Join(c.PGData, "pg_wal")); err != nil || dst != newWAL {
		t.Fatalf("with --waldir, pg_wal links to %q (%v), want %s", dst, err, newWAL)
	}
	if got := batchesIn(t, c); got != "1,2" {
		t.Fatalf("the cluster restored with --waldir holds batches %q, want 1,2", got)
	}
	seg := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	if _, err := os.Stat(filepath.Join(newWAL, seg)); err != nil {
		t.Errorf("the current segment is not in the --waldir directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(newWAL, "archive_status")); err != nil {
		t.Errorf("archive_status: %v", err)
	}
	c.Stop(t, "fast")
}
