package restore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
)

// TestLayoutMakesPGWAL: a backup of a cluster whose pg_wal was a link
// (initdb -X), taken before the backup recorded it, lists neither pg_wal
// nor pg_wal/archive_status; the restore makes both anyway, as real
// directories inside the data directory (PostgreSQL does not start
// without pg_wal), and syncs them.
func TestLayoutMakesPGWAL(t *testing.T) {
	root := filepath.Join(t.TempDir(), "pgdata")
	w := &writer{root: root}
	m := &backup.Manifest{Dirs: []backup.Dir{{Path: "global", Mode: 0o700}, {Path: "base", Mode: 0o700}}}
	if err := w.layout(m); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"pg_wal", "pg_wal/archive_status"} {
		fi, err := os.Lstat(filepath.Join(root, d))
		if err != nil {
			t.Fatalf("restore did not make %s: %v", d, err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v, want a directory with mode 0700", d, fi.Mode())
		}
	}
	if err := w.syncDirs(m); err != nil {
		t.Fatal(err)
	}
}

// TestLayoutWALDir: with --waldir, pg_wal is a link to that directory and
// pg_wal/archive_status is made in it.
func TestLayoutWALDir(t *testing.T) {
	root := filepath.Join(t.TempDir(), "pgdata")
	walDir := filepath.Join(t.TempDir(), "wal", "main")
	w := &writer{root: root, walDir: walDir}
	m := &backup.Manifest{Dirs: []backup.Dir{{Path: "global", Mode: 0o700}, {Path: "pg_wal", Mode: 0o700}, {Path: "pg_wal/archive_status", Mode: 0o700}}}
	if err := w.layout(m); err != nil {
		t.Fatal(err)
	}
	if dst, err := os.Readlink(filepath.Join(root, "pg_wal")); err != nil || dst != walDir {
		t.Fatalf("pg_wal links to %q (%v), want %s", dst, err, walDir)
	}
	if fi, err := os.Stat(filepath.Join(walDir, "archive_status")); err != nil || !fi.IsDir() {
		t.Fatalf("archive_status is not made in the WAL directory: %v", err)
	}
	if err := w.syncDirs(m); err != nil {
		t.Fatal(err)
	}
}

// TestCheckWALDir: --waldir must be absolute, apart from the data
// directory and the tablespaces, and empty; --force empties only the WAL
// directory the data directory being replaced links to.
func TestCheckWALDir(t *testing.T) {
	base := t.TempDir()
	pgdata := filepath.Join(base, "pgdata")
	spc := []backup.Tablespace{{OID: "16384", Name: "fast", Location: filepath.Join(base, "spc")}}
	full := filepath.Join(base, "full")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "000000010000000000000001"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir   string
		force bool
		want  string
	}{
		{"wal", false, "not an absolute path"},
		{filepath.Join(pgdata, "wal"), false, "overlaps the data directory"},
		{base, false, "overlaps the data directory"},
		{filepath.Join(base, "spc", "wal"), false, "overlaps tablespace 16384"},
		{full, false, "is not empty"},
		{full, true, "--force does not empty it"},
	} {
		_, err := checkWALDir(tc.dir, pgdata, spc, tc.force)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkWALDir(%s, force %v) = %v, want %q", tc.dir, tc.force, err, tc.want)
		}
	}
	if f, err := checkWALDir(filepath.Join(base, "new"), pgdata, spc, false); err != nil || f {
		t.Errorf("an absent WAL directory: %v %v", f, err)
	}
	// The data directory being replaced links its pg_wal there: --force
	// may empty it.
	if err := os.MkdirAll(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(full, filepath.Join(pgdata, "pg_wal")); err != nil {
		t.Fatal(err)
	}
	if f, err := checkWALDir(full, pgdata, spc, true); err != nil || !f {
		t.Errorf("the replaced data directory's WAL directory with --force: %v %v", f, err)
	}
	if _, err := checkWALDir(full, pgdata, spc, false); err == nil {
		t.Error("a non-empty WAL directory accepted without --force")
	}
}
