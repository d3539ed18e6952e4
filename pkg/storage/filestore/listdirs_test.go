package filestore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// TestListDirs: the directories directly under a prefix, sorted, without
// the objects beside them or what is below them; a missing prefix has
// none; a symbolic link is refused; a prefix not ending in '/' is refused.
func TestListDirs(t *testing.T) {
	root := t.TempDir()
	s, err := filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	var dl storage.DirLister = s
	ctx := context.Background()
	for _, k := range []string{"main/backup/b/x", "main/backup/a/pgdata/base/1", "main/backup/a/backup.manifest", "main/backup/file", "main/wal/00000001/x"} {
		if err := s.Put(ctx, k, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	got, err := dl.ListDirs(ctx, "main/backup/")
	if err != nil || strings.Join(got, ",") != "a,b" {
		t.Fatalf("ListDirs(main/backup/) = %q, %v; want a,b", got, err)
	}
	if got, err := dl.ListDirs(ctx, "other/"); err != nil || len(got) != 0 {
		t.Fatalf("ListDirs(other/) = %q, %v; want none", got, err)
	}
	if _, err := dl.ListDirs(ctx, "main/backup"); err == nil {
		t.Fatal("a prefix without '/' accepted")
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(root, "main", "backup", "c")); err != nil {
		t.Fatal(err)
	}
	if _, err := dl.ListDirs(ctx, "main/backup/"); !errors.Is(err, filestore.ErrSymlink) {
		t.Fatalf("with a symbolic link among the entries: %v, want ErrSymlink", err)
	}
}
