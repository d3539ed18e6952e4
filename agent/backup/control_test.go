package backup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/pgcontrol"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// pg15Control is global/pg_control as PostgreSQL 15's initdb wrote it.
func pg15Control(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "pkg", "pgcontrol", "testdata", "pg_control.pg15"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tornControl is b with part of ControlFileData from another version of
// the file, as a read racing PostgreSQL's rewrite returns it.
func tornControl(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := 100; i < 200; i++ {
		c[i] ^= 0x33
	}
	return c
}

// controlCopier is a copier into a fresh file repository, and the walked
// global/pg_control holding content.
func controlCopier(t *testing.T, content []byte) (*copier, *filestore.Store, []walkFile) {
	t.Helper()
	pgdata := t.TempDir()
	abs := filepath.Join(pgdata, "global", "pg_control")
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(abs, content, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(abs)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "c", Compression: config.Compression{Method: "zstd", Level: 3}, Encryption: config.Encryption{Disabled: true}}
	c := &copier{
		d:        Deps{Cfg: cfg, Repos: []repo.Repo{{Name: "r", Store: fs}}, Log: slog.New(slog.DiscardHandler)},
		m:        &Manifest{Cluster: "c", ID: "20261126T080000F"},
		srv:      &server{},
		pool:     &objstream.Pool{},
		partSize: PartSize,
	}
	return c, fs, []walkFile{{rel: "global/pg_control", abs: abs, info: info}}
}

// TestCopyControlFileTorn: a pg_control whose CRC never checks (torn on
// every read, or damaged) fails the backup with an error naming it,
// instead of storing a copy the restored cluster would refuse.
func TestCopyControlFileTorn(t *testing.T) {
	c, _, files := controlCopier(t, tornControl(pg15Control(t)))
	_, err := c.copyAll(context.Background(), files, 1)
	if err == nil {
		t.Fatal("a pg_control with a bad CRC was backed up")
	}
	if !errors.Is(err, pgcontrol.ErrBadCRC) || !strings.Contains(err.Error(), "global/pg_control") {
		t.Fatalf("copyAll = %v, want an incorrect checksum naming global/pg_control", err)
	}
	t.Log(err)
}

// TestCopyControlFileRereads: a pg_control read torn a few times (a
// rewrite racing the reads) is read again until it checks, and the copy
// stored is the whole one; PostgreSQL 15's own file is stored as it is.
func TestCopyControlFileRereads(t *testing.T) {
	good := pg15Control(t)
	for _, tornReads := range []int{0, 3} {
		c, fs, files := controlCopier(t, good)
		reads := 0
		c.control = pgcontrol.Reader{Attempts: 5, Pause: time.Millisecond, ReadFile: func(name string) ([]byte, error) {
			reads++
			if reads <= tornReads {
				return tornControl(good), nil
			}
			return os.ReadFile(name)
		}}
		got, err := c.copyAll(context.Background(), files, 1)
		if err != nil {
			t.Fatalf("torn %d times: %v", tornReads, err)
		}
		if reads != tornReads+1 || len(got) != 1 || got[0].Size != int64(len(good)) || got[0].Object == "" {
			t.Fatalf("torn %d times: %d reads, stored %+v", tornReads, reads, got)
		}
		rc, err := fs.Get(context.Background(), "c/"+got[0].Object)
		if err != nil {
			t.Fatal(err)
		}
		or, err := objstream.NewReader(rc, nil)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := io.ReadAll(or)
		rc.Close()
		if err != nil || !bytes.Equal(stored, good) {
			t.Fatalf("torn %d times: the stored pg_control is not the whole one (%d bytes, %v)", tornReads, len(stored), err)
		}
	}
}
