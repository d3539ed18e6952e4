package restore

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgdr/pgdr/agent/backup"
)

// checkWALDir checks Options.WALDir (--waldir), the directory the restored
// pg_wal links to, before anything is written: an absolute path, outside
// the data directory and every tablespace location (and holding none of
// them), absent or empty. full reports a non-empty one --force may empty:
// only the directory the data directory being replaced already links
// pg_wal to (a restore over an earlier one with the same layout); any
// other may be a live cluster's WAL, which --force never touches.
func checkWALDir(dir, pgdata string, tss []backup.Tablespace, force bool) (full bool, err error) {
	if !filepath.IsAbs(dir) {
		return false, fmt.Errorf("--waldir %q: not an absolute path", dir)
	}
	real, data := resolvePath(dir), resolvePath(pgdata)
	if within(real, data) || within(data, real) {
		return false, fmt.Errorf("--waldir %s: it overlaps the data directory %s (give a directory outside it)", dir, pgdata)
	}
	for _, ts := range tss {
		if loc := resolvePath(ts.Location); within(real, loc) || within(loc, real) {
			return false, fmt.Errorf("--waldir %s: it overlaps tablespace %s at %s", dir, describe(ts), ts.Location)
		}
	}
	if dest, err := os.Readlink(filepath.Join(pgdata, "pg_wal")); err != nil || resolvePath(dest) != real {
		force = false
	}
	full, err = checkDir(dir, force, "empty it, or pass --force if the data directory being replaced links its pg_wal to it "+
		"(any other WAL directory may be a live cluster's: --force does not empty it)")
	if err != nil {
		return false, fmt.Errorf("--waldir: %w", err)
	}
	return full, nil
}

// linkWALDir makes dir (mode 0700) and the link root/pg_wal to it, before
// the restore makes pg_wal/archive_status through the link.
func linkWALDir(root, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--waldir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("--waldir %s: %w", dir, err)
	}
	link := filepath.Join(root, "pg_wal")
	if err := os.Symlink(dir, link); err != nil {
		return fmt.Errorf("linking %s to the WAL directory %s: %w", link, dir, err)
	}
	return nil
}
