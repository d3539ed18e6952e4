package restore

import (
	"os"
	"path/filepath"
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
