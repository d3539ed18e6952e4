package walship

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestRootLeavesPgWalToItsOwner: a prefetch or push ahead run as root (a
// daemon run as root) creates pg_wal/pgdr_prefetch and
// pg_wal/pgdr_archive_status; they, and the files in them, must belong to
// the data directory's owner, or wal-fetch and wal-push, run by
// PostgreSQL's user, cannot clean them (and PostgreSQL cannot read a
// prefetched segment renamed into place).
func TestRootLeavesPgWalToItsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks what root creates")
	}
	cred := pgtest.Credential(t)
	f := newFixture(t, "")
	ctx := context.Background()
	for i := uint64(1); i <= 5; i++ {
		f.segment(t, i)
	}
	pgtest.Chown(t, f.pgdata)
	first := wal.SegmentName(1, 1, segSize)
	if err := f.sh.Push(ctx, filepath.Join(f.pgwal, first)); err != nil { // pushes 2 and 3 ahead
		t.Fatal(err)
	}
	rec := filepath.Join(testutil.FakePGData(t, sysid), "pg_wal")
	pgtest.Chown(t, filepath.Dir(rec))
	if err := f.sh.Prefetch(ctx, rec, first, segSize); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(f.pgwal, MarkerDir), filepath.Join(rec, PrefetchDir)} {
		n := 0
		err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != cred.Uid || st.Gid != cred.Gid {
				t.Errorf("%s belongs to %d:%d, want the data directory owner's %d:%d", p, st.Uid, st.Gid, cred.Uid, cred.Gid)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n < 2 {
			t.Fatalf("%s: %d entries, want the directory and its files", dir, n)
		}
	}
}
