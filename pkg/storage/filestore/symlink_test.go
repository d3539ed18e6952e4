package filestore_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// A symbolic link planted below the root (the repository is untrusted
// storage) is never followed: not as a key's directory, not as the key
// itself, by any operation. Every case checks that the files outside the
// root are untouched and that the error is ErrSymlink naming the link.
func TestSymlinkNeverFollowed(t *testing.T) {
	ctx := context.Background()
	type setup struct {
		name string
		// link makes the link below root pointing at victim (a directory
		// holding the file "f") and returns the key reaching through it.
		link func(t *testing.T, root, victim string) string
	}
	setups := []setup{
		{"dir link outside", func(t *testing.T, root, victim string) string {
			mustSymlink(t, victim, filepath.Join(root, "c", "expiry", "deleting"))
			return "c/expiry/deleting/f"
		}},
		{"file link outside", func(t *testing.T, root, victim string) string {
			mustSymlink(t, filepath.Join(victim, "f"), filepath.Join(root, "c", "expiry", "deleting", "f"))
			return "c/expiry/deleting/f"
		}},
		{"dir link inside", func(t *testing.T, root, victim string) string {
			// An in-root link is refused too: it would let expiry's
			// listing of its markers reach real backups.
			mustWrite(t, filepath.Join(root, "c", "backup", "f"), "inside")
			mustSymlink(t, filepath.Join(root, "c", "backup"), filepath.Join(root, "c", "expiry", "deleting"))
			return "c/expiry/deleting/f"
		}},
	}
	ops := []struct {
		name string
		do   func(s *filestore.Store, key string) error
	}{
		{"Get", func(s *filestore.Store, key string) error {
			rc, err := s.Get(ctx, key)
			if err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				t.Logf("read %q", b)
			}
			return err
		}},
		{"Stat", func(s *filestore.Store, key string) error { _, err := s.Stat(ctx, key); return err }},
		{"Put", func(s *filestore.Store, key string) error {
			return s.Put(ctx, key, strings.NewReader("evil"), 4)
		}},
		{"Delete", func(s *filestore.Store, key string) error { return s.Delete(ctx, key) }},
		{"Sync", func(s *filestore.Store, key string) error { return s.Sync(ctx, key) }},
		{"List", func(s *filestore.Store, key string) error {
			return s.List(ctx, key[:strings.LastIndexByte(key, '/')+1], func(oi storage.ObjectInfo) error {
				return errors.New("listed " + oi.Key + " through a link")
			})
		}},
		{"ListParent", func(s *filestore.Store, key string) error {
			return s.List(ctx, "c/", func(oi storage.ObjectInfo) error {
				if strings.HasPrefix(oi.Key, "c/expiry/") {
					return errors.New("listed " + oi.Key + " through a link")
				}
				return nil
			})
		}},
	}
	for _, su := range setups {
		for _, op := range ops {
			t.Run(su.name+"/"+op.name, func(t *testing.T) {
				root := filepath.Join(t.TempDir(), "repo")
				victim := t.TempDir()
				mustWrite(t, filepath.Join(victim, "f"), "precious")
				if err := os.MkdirAll(filepath.Join(root, "c", "expiry", "deleting"), 0o700); err != nil {
					t.Fatal(err)
				}
				if su.name == "dir link outside" || su.name == "dir link inside" {
					os.Remove(filepath.Join(root, "c", "expiry", "deleting"))
				}
				key := su.link(t, root, victim)
				s, err := filestore.New(root)
				if err != nil {
					t.Fatal(err)
				}
				err = op.do(s, key)
				if !errors.Is(err, filestore.ErrSymlink) {
					t.Errorf("%s %s through a link: err %v, want ErrSymlink", op.name, key, err)
				} else if !strings.Contains(err.Error(), filepath.Join(root, "c", "expiry", "deleting")) {
					t.Errorf("error does not name the link: %v", err)
				}
				for _, p := range []string{filepath.Join(victim, "f"), filepath.Join(root, "c", "backup", "f")} {
					b, err := os.ReadFile(p)
					if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(p, root) {
						continue
					}
					if err != nil || (string(b) != "precious" && string(b) != "inside") {
						t.Errorf("%s: %q, %v: changed through a link", p, b, err)
					}
				}
				if _, err := os.Stat(filepath.Join(victim, "evil")); err == nil {
					t.Errorf("file created outside the root")
				}
			})
		}
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
