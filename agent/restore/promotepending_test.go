package restore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
)

// TestRestoreSkipsPromotePending: review 12. A backup taken before
// backups excluded pgdr.promote-pending may hold the source's promotion
// guard; written into the restored data directory, the agent there would
// take it for its own from another boot and fence the restored server on
// its next start. The restore writes every other file, not that one.
func TestRestoreSkipsPromotePending(t *testing.T) {
	f := newForgedRepo(t)
	f.put(t, forgedManifest([]backup.Dir{{Path: "base", Mode: 0o700}}, []backup.File{
		{Path: "PG_VERSION", Mode: 0o600, Kind: backup.KindFull},
		{Path: "pgdr.promote-pending", Mode: 0o600, Kind: backup.KindFull},
		{Path: "base/pgdr.promote-pending", Mode: 0o600, Kind: backup.KindFull}, // not the guard: only the top-level file is
	}, nil))
	pgdata := filepath.Join(f.base, "pgdata")
	res, err := Restore(context.Background(), f.deps, Options{BackupID: "20261126T081700F", PGData: pgdata, AgentPath: "pgdr-agent", ConfigPath: "cfg", Rejoin: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "pgdr.promote-pending")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the restore wrote the backup's pgdr.promote-pending (%v): the agent here would fence the restored server on its next start", err)
	}
	for _, p := range []string{"PG_VERSION", "base/pgdr.promote-pending"} {
		if _, err := os.Stat(filepath.Join(pgdata, p)); err != nil {
			t.Errorf("%s not restored: %v", p, err)
		}
	}
	if res.Files != 2 {
		t.Errorf("restored %d files, want 2", res.Files)
	}
}
