package filestore_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestRootCreatesOwnersFiles: run as root (sudo wal-repair, a first
// wal-push as root, a daemon run as root), the store gives every file and
// directory it creates to the owner of the repository root, or, while the
// root does not exist, to the owner of its nearest existing parent: the
// archiver (postgres) must keep reading and writing them.
func TestRootCreatesOwnersFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks what root creates")
	}
	cred := pgtest.Credential(t)
	ctx := context.Background()
	put := func(s *filestore.Store, keys ...string) {
		t.Helper()
		for _, k := range keys {
			b := []byte("object " + k)
			if err := s.Put(ctx, k, bytes.NewReader(b), int64(len(b))); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkOwned := func(top string) {
		t.Helper()
		n := 0
		err := filepath.WalkDir(top, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != cred.Uid || st.Gid != cred.Gid {
				t.Errorf("%s belongs to %d:%d, want the repository owner's %d:%d", p, st.Uid, st.Gid, cred.Uid, cred.Gid)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n < 4 {
			t.Fatalf("only %d entries under %s", n, top)
		}
	}

	// The root exists, owned by postgres.
	root := filepath.Join(pgtest.OwnedDir(t, "pgdr-fs-owner-"), "repo")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, root)
	s, err := filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	put(s, "main/cluster.json", "main/wal/00000001/000000010000000000000001", "main/backup/X/pgdata/base/1/1259")
	checkOwned(root)

	// The root and a parent do not exist yet: the nearest existing parent
	// (owned by postgres) decides.
	parent := pgtest.OwnedDir(t, "pgdr-fs-owner-")
	root = filepath.Join(parent, "pgdr", "repo")
	s, err = filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	put(s, "main/cluster.json", "main/wal/00000001/000000010000000000000002")
	if err := s.Sync(ctx, "main/cluster.json"); err != nil {
		t.Fatal(err)
	}
	checkOwned(filepath.Join(parent, "pgdr"))
}
