package health

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgdr/pgdr/pkg/fsutil"
)

// PromotePendingFile is the promotion guard's record in PGDATA
// (agent/watchdog's PendingFile): this node's pending promotion and its
// give-up time. An agent that finds it at start resumes the guard; a
// record of another boot counts as passed, so the node is fenced at once
// unless a lease was granted to it. It therefore never travels with the
// data: backups leave it out (agent/backup), a restore does not write it
// (agent/restore), and a data directory filled or rewound from another
// server drops the one it got from there (RemovePromotePending).
const PromotePendingFile = "pgdr.promote-pending"

// PromotePendingPath is the promotion guard's record in pgdata.
func PromotePendingPath(pgdata string) string { return filepath.Join(pgdata, PromotePendingFile) }

// RemovePromotePending removes the promotion guard's record from pgdata,
// durably (the directory is synced), and reports whether there was one.
// It is for a data directory that pg_basebackup or pg_rewind has just
// filled from another server, which brings that server's record along:
// only the node that wrote a record may keep it, and a node being
// re-cloned or rewound is not promoting (its server was stopped first,
// which drops a requested promotion), so no guard of its own can need one.
func RemovePromotePending(pgdata string) (bool, error) {
	err := os.Remove(PromotePendingPath(pgdata))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("removing %s: %w", PromotePendingPath(pgdata), err)
	}
	if err := fsutil.SyncDir(pgdata); err != nil {
		return true, fmt.Errorf("removing %s: %w", PromotePendingPath(pgdata), err)
	}
	return true, nil
}
