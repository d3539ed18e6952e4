package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// failingStore fails the Put of one key after reading all of it, as an
// fsync or a rename would: the failure comes once the worker has handed
// the upload over.
type failingStore struct {
	storage.ObjectStore
	key string
}

var errInjected = errors.New("injected upload failure")

func (f failingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasSuffix(key, f.key) {
		io.Copy(io.Discard, r)
		return errInjected
	}
	return f.ObjectStore.Put(ctx, key, r, size)
}

// TestCopyAllUploads: copyAll stores every file (small ones finished in the
// background) and reports a failure of any upload, even one finished after
// its worker moved on.
func TestCopyAllUploads(t *testing.T) {
	pgdata := t.TempDir()
	var files []walkFile
	for i := range 200 {
		rel := fmt.Sprintf("pg_xact/%04d", i)
		if i == 0 {
			rel = "big"
		}
		size := 100 + i
		if i == 0 {
			size = 3 << 20
		}
		abs := filepath.Join(pgdata, rel)
		os.MkdirAll(filepath.Dir(abs), 0o700)
		if err := os.WriteFile(abs, []byte(strings.Repeat(fmt.Sprint(i), size)[:size]), 0o600); err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(abs)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, walkFile{rel: rel, abs: abs, info: info})
	}
	for _, failing := range []string{"", "pg_xact/0150", "big.pgdr-part-1"} {
		t.Run("failing="+failing, func(t *testing.T) {
			fs, err := filestore.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var store storage.ObjectStore = fs
			if failing != "" {
				store = failingStore{fs, failing}
			}
			cfg := &config.Config{Cluster: "c", Compression: config.Compression{Method: "zstd", Level: 3}, Encryption: config.Encryption{Disabled: true}}
			c := &copier{
				d:        Deps{Cfg: cfg, Repos: []repo.Repo{{Name: "r", Store: store}}, Log: slog.New(slog.DiscardHandler)},
				m:        &Manifest{Cluster: "c", ID: "20261126T080000F"},
				srv:      &server{},
				pool:     &objstream.Pool{},
				partSize: 1 << 20,
			}
			got, err := c.copyAll(context.Background(), files, 2)
			if failing != "" {
				if !errors.Is(err, errInjected) {
					t.Fatalf("copyAll = %v, want the injected failure", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(files) {
				t.Fatalf("%d files stored, want %d", len(got), len(files))
			}
			for _, f := range got {
				objs := f.Objects()
				if len(objs) == 0 {
					t.Fatalf("%s: no object", f.Path)
				}
				for _, o := range objs {
					if _, err := fs.Stat(context.Background(), "c/"+o.Object); err != nil {
						t.Fatalf("%s: %v", f.Path, err)
					}
				}
			}
		})
	}
}
