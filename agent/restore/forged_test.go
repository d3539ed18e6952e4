package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
)

// TestCheckManifest: the table of what a manifest may name. Every refusal
// happens before anything is written (TestRestoreRefusesForgedManifest).
func TestCheckManifest(t *testing.T) {
	good := func() *backup.Manifest {
		return &backup.Manifest{ID: "20261126T081700F",
			Tablespaces: []backup.Tablespace{{OID: "16384", Location: "/srv/spc"}},
			Dirs:        []backup.Dir{{Path: "base", Mode: 0o700}, {Path: "base/5", Mode: 0o700}, {Path: "pg_tblspc", Mode: 0o700}, {Path: "pg_tblspc/16384/PG_15_202209061", Mode: 0o700}},
			Files:       []backup.File{{Path: "PG_VERSION", Mode: 0o600}, {Path: "base/5/1259", Mode: 0o600, Size: 8192}, {Path: "pg_tblspc/16384/PG_15_202209061/5/16385", Mode: 0o600}},
		}
	}
	if err := checkManifest(good()); err != nil {
		t.Fatalf("a well-formed manifest refused: %v", err)
	}
	for _, c := range []struct {
		name  string
		forge func(m *backup.Manifest)
		want  string
	}{
		{"file ../../x", func(m *backup.Manifest) { m.Files[0].Path = "../../x" }, `file "../../x": a ".." path segment`},
		{"file inside then out", func(m *backup.Manifest) { m.Files[0].Path = "base/../../x" }, `a ".." path segment`},
		{"absolute file", func(m *backup.Manifest) { m.Files[0].Path = "/etc/passwd" }, "an absolute path"},
		{"empty file path", func(m *backup.Manifest) { m.Files[0].Path = "" }, "an empty path"},
		{"empty segment", func(m *backup.Manifest) { m.Files[0].Path = "base//x" }, "an empty path segment"},
		{"trailing slash", func(m *backup.Manifest) { m.Files[0].Path = "base/" }, "an empty path segment"},
		{"dot segment", func(m *backup.Manifest) { m.Files[0].Path = "./x" }, `a "." path segment`},
		{"NUL", func(m *backup.Manifest) { m.Files[0].Path = "base/x\x00y" }, "NUL"},
		{"file twice", func(m *backup.Manifest) { m.Files[0].Path = "base/5/1259" }, "listed twice"},
		{"file is a dir", func(m *backup.Manifest) { m.Files[0].Path = "base/5" }, "also a directory"},
		{"file is a tablespace link", func(m *backup.Manifest) { m.Files[0].Path = "pg_tblspc/16384" }, "tablespace link"},
		{"setuid file", func(m *backup.Manifest) { m.Files[0].Mode = uint32(os.ModeSetuid) | 0o755 }, "more than permission bits"},
		{"negative size", func(m *backup.Manifest) { m.Files[1].Size = -1 }, "negative size"},
		{"dir ../d", func(m *backup.Manifest) { m.Dirs[0].Path = "../d" }, `directory "../d": a ".." path segment`},
		{"absolute dir", func(m *backup.Manifest) { m.Dirs[0].Path = "/tmp/d" }, "an absolute path"},
		{"dir is a tablespace link", func(m *backup.Manifest) { m.Dirs[0].Path = "pg_tblspc/16384" }, "tablespace link"},
		{"setgid dir", func(m *backup.Manifest) { m.Dirs[0].Mode = 0o2700 }, "more than permission bits"},
		{"OID ../../victim", func(m *backup.Manifest) { m.Tablespaces[0].OID = "../../victim" }, `OID "../../victim" is not a number`},
		{"empty OID", func(m *backup.Manifest) { m.Tablespaces[0].OID = "" }, "is not a number"},
		{"OID with a slash", func(m *backup.Manifest) { m.Tablespaces[0].OID = "16384/x" }, "is not a number"},
		{"OID twice", func(m *backup.Manifest) {
			m.Tablespaces = append(m.Tablespaces, backup.Tablespace{OID: "16384", Location: "/srv/other"})
		}, "listed twice"},
		{"relative location", func(m *backup.Manifest) { m.Tablespaces[0].Location = "spc" }, "not an absolute path"},
		{"unclean location", func(m *backup.Manifest) { m.Tablespaces[0].Location = "/srv/x/../../etc" }, "not a clean path"},
		{"location /", func(m *backup.Manifest) { m.Tablespaces[0].Location = "/" }, "root"},
		{"location with NUL", func(m *backup.Manifest) { m.Tablespaces[0].Location = "/srv/\x00" }, "NUL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := good()
			c.forge(m)
			err := checkManifest(m)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("checkManifest = %v, want an error with %q", err, c.want)
			}
		})
	}
}

// forgedRepo is a file repository holding one backup whose manifest the
// test writes as an attacker with write access to the bucket would.
type forgedRepo struct {
	base string // everything the test makes is under it
	deps Deps
}

func newForgedRepo(t *testing.T) *forgedRepo {
	t.Helper()
	base := t.TempDir()
	cfg, err := config.Parse([]byte("cluster: main\nnode: {name: n1}\npostgres: {pgdata: " + filepath.Join(base, "unused") +
		"}\nrepos: [{name: r, url: 'file://" + filepath.Join(base, "repo") + "'}]\nencryption: {disabled: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := repo.OpenAll(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &forgedRepo{base: base, deps: Deps{Cfg: cfg, Repos: rs, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
}

// put stores m as backup m.ID (its manifest only: every file is empty, so
// no object is read).
func (f *forgedRepo) put(t *testing.T, m *backup.Manifest) {
	t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := objstream.NewWriter(&buf, objstream.Options{Compression: objstream.CompressionZstd, Unencrypted: true, PlainSize: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	key := "main/backup/" + m.ID + "/backup.manifest"
	if err := f.deps.Repos[0].Store.Put(context.Background(), key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatal(err)
	}
}

// forgedManifest is a minimal full backup with the given layout.
func forgedManifest(dirs []backup.Dir, files []backup.File, tss []backup.Tablespace) *backup.Manifest {
	now := time.Now().UTC()
	return &backup.Manifest{Format: backup.ManifestFormat, ID: "20261126T081700F", Type: backup.TypeFull, Cluster: "main", Node: "n1",
		StartTime: now, StopTime: now, Timeline: 1, SegmentSize: 16 << 20, BackupLabel: []byte("START WAL LOCATION: 0/2000028\n"),
		Dirs: dirs, Files: files, Tablespaces: tss}
}

// TestRestoreRefusesForgedManifest: a manifest that names a file, a
// directory or a tablespace link outside the data directory is refused
// before anything is written: the target is not even created, and the
// sentinel files beside it keep their content.
func TestRestoreRefusesForgedManifest(t *testing.T) {
	for _, c := range []struct {
		name  string
		m     func(base string) *backup.Manifest
		touch []string // relative to base: must stay absent
		want  string
	}{
		{"file ../../x", func(string) *backup.Manifest {
			return forgedManifest([]backup.Dir{{Path: "base", Mode: 0o700}}, []backup.File{{Path: "../../x", Mode: 0o600, Kind: backup.KindFull}}, nil)
		}, nil, `file "../../x"`},
		{"absolute file", func(base string) *backup.Manifest {
			return forgedManifest(nil, []backup.File{{Path: filepath.Join(base, "abs"), Mode: 0o600, Kind: backup.KindFull}}, nil)
		}, []string{"abs"}, "an absolute path"},
		{"dir ../d", func(string) *backup.Manifest {
			return forgedManifest([]backup.Dir{{Path: "../d", Mode: 0o700}}, nil, nil)
		}, []string{"a/b/d"}, `directory "../d"`},
		{"OID ../../victim", func(base string) *backup.Manifest {
			return forgedManifest([]backup.Dir{{Path: "pg_tblspc", Mode: 0o700}}, nil,
				[]backup.Tablespace{{OID: "../../victim", Location: filepath.Join(base, "spc")}})
		}, []string{"spc"}, `OID "../../victim"`},
		{"relative location", func(string) *backup.Manifest {
			return forgedManifest(nil, nil, []backup.Tablespace{{OID: "16384", Location: "spc"}})
		}, nil, "not an absolute path"},
		{"location inside the data directory", func(base string) *backup.Manifest {
			return forgedManifest(nil, nil, []backup.Tablespace{{OID: "16384", Location: filepath.Join(base, "a/b/pgdata/global")}})
		}, nil, "inside the data directory"},
		{"location around the data directory", func(base string) *backup.Manifest {
			return forgedManifest(nil, nil, []backup.Tablespace{{OID: "16384", Location: filepath.Join(base, "a/b/new")},
				{OID: "16385", Location: filepath.Join(base, "a/b/new/inner")}})
		}, []string{"a/b/new"}, "would be inside tablespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newForgedRepo(t)
			pgdata := filepath.Join(f.base, "a", "b", "pgdata")
			// The sentinels: a file ../../x and ../../victim would reach.
			sentinels := map[string]string{filepath.Join(f.base, "a", "x"): "keep x", filepath.Join(f.base, "a", "victim"): "keep victim"}
			for p, body := range sentinels {
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f.put(t, c.m(f.base))
			_, err := Restore(context.Background(), f.deps, Options{BackupID: "20261126T081700F", PGData: pgdata, AgentPath: "pgdr-agent", ConfigPath: "cfg"})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Restore = %v, want a refusal with %q", err, c.want)
			}
			for p, body := range sentinels {
				fi, err := os.Lstat(p)
				if err != nil || !fi.Mode().IsRegular() {
					t.Fatalf("sentinel %s: %v (mode %v): the restore touched it", p, err, fi)
				}
				if b, _ := os.ReadFile(p); string(b) != body {
					t.Fatalf("sentinel %s holds %q, want %q", p, b, body)
				}
			}
			for _, p := range append([]string{"a/b/pgdata"}, c.touch...) {
				if _, err := os.Lstat(filepath.Join(f.base, p)); err == nil {
					t.Errorf("%s exists after the refused restore", p)
				}
			}
		})
	}
}

// TestLayoutRefusesSymlinkComponent: a symbolic link met below the data
// directory while the restore runs (planted there, or left by a forged
// layout) is refused, not followed: neither a directory nor a file is made
// through it, and what it points to keeps its content.
func TestLayoutRefusesSymlinkComponent(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	sentinel := filepath.Join(outside, "pg_control")
	if err := os.WriteFile(sentinel, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		link   string // made in the data directory before the layout, pointing at target
		target string
		dirs   []backup.Dir
		file   string // then restored (empty)
	}{
		{name: "a directory through a link out", link: "base", target: outside,
			dirs: []backup.Dir{{Path: "base", Mode: 0o700}, {Path: "base/5", Mode: 0o700}}},
		{name: "a file through a parent link out", link: "global", target: outside, file: "global/pg_control"},
		{name: "a file through a parent link inside", link: "global", target: "pg_wal", file: "global/pg_control"},
		{name: "a file that is a link", link: "pg_control", target: sentinel, file: "pg_control"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "pgdata")
			w := &writer{root: root}
			defer func() { w.roots.close() }()
			if err := os.MkdirAll(root, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(c.target, filepath.Join(root, c.link)); err != nil {
				t.Fatal(err)
			}
			err := w.layout(&backup.Manifest{Dirs: c.dirs})
			if c.file != "" {
				if err != nil {
					t.Fatal(err)
				}
				s := &syncer{jobs: make(chan syncJob, 1), cancel: func() {}, w: w}
				err = w.file(context.Background(), filePlan{f: backup.File{Path: c.file, Mode: 0o600, Kind: backup.KindFull}}, s)
				close(s.jobs)
				for j := range s.jobs {
					j.fh.Close()
				}
			}
			if err == nil {
				t.Fatal("the restore wrote through a symbolic link")
			}
			if b, _ := os.ReadFile(sentinel); string(b) != "keep" {
				t.Fatalf("the file the link points to holds %q", b)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Fatalf("the directory the link points to holds %d entries", len(ents))
			}
			t.Logf("refused: %v", err)
		})
	}
}
