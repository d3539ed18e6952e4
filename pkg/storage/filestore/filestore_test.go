package filestore_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.ObjectStore {
		// A root that does not exist yet: the first Put must create it.
		root := filepath.Join(t.TempDir(), "repo")
		s, err := filestore.New(root)
		if err != nil {
			t.Fatal(err)
		}
		// Runs before TempDir's own cleanup: whatever the subtest did,
		// failed and cancelled puts must not leave temp files behind.
		t.Cleanup(func() { checkNoTemp(t, root) })
		return s
	})
}

func checkNoTemp(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".pgdr-tmp-") {
			t.Errorf("temp file left behind: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", root, err)
	}
}

func TestNewRejectsFileRoot(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := filestore.New(f); err == nil || !strings.Contains(err.Error(), f) {
		t.Fatalf("New(%s) = %v, want an error naming the path", f, err)
	}
	if _, err := filestore.New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}

func TestStringAndErrors(t *testing.T) {
	root := t.TempDir()
	s, err := filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "file://"+root; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	_, err = s.Stat(t.Context(), "x/y")
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), `"x/y"`) ||
		!strings.Contains(err.Error(), filepath.Join(root, "x", "y")) {
		t.Errorf("Stat error %q should wrap ErrNotFound and name the key and the path", err)
	}
}

func TestReservedTempName(t *testing.T) {
	s, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{".pgdr-tmp-123", "a/.pgdr-tmp-x/b"} {
		if err := s.Put(t.Context(), k, strings.NewReader("x"), 1); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

func TestDeletePrunesEmptyDirs(t *testing.T) {
	root := t.TempDir()
	s, err := filestore.New(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, k := range []string{"backups/1/a/base", "backups/2/base"} {
		if err := s.Put(ctx, k, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "backups/1/a/base"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "backups", "1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty directory backups/1 still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "backups", "2", "base")); err != nil {
		t.Errorf("unrelated object gone: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("root must survive pruning: %v", err)
	}
}
