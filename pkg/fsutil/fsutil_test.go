package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileSynced(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("a longer old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileSynced(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "new" {
		t.Fatalf("read back %q, %v; want the file truncated to \"new\"", b, err)
	}
	q := filepath.Join(dir, "created")
	if err := WriteFileSynced(q, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(q); err != nil || fi.Size() != 0 || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("created file: %v, %v; want empty and private", fi, err)
	}
	if err := WriteFileSynced(filepath.Join(dir, "absent", "f"), []byte("x"), 0o600); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("into a missing directory: %v, want ErrNotExist", err)
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("SyncDir of a missing directory: %v, want ErrNotExist", err)
	}
}
