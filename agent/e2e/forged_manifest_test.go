package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
)

// TestRestoreForgedManifest: `pgdr-agent restore` of a backup whose
// manifest someone with write access to the repository forged — a file
// ../../x, a directory ../d, a tablespace OID ../../victim — fails, and
// nothing is written: the target is not created and the files beside it
// keep their content (issue 13 item 1).
func TestRestoreForgedManifest(t *testing.T) {
	for _, c := range []struct {
		name string
		m    func(base string) *backup.Manifest
		want string
	}{
		{"file ../../x", func(string) *backup.Manifest {
			return forged(nil, []backup.File{{Path: "../../x", Mode: 0o600, Kind: backup.KindFull}}, nil)
		}, `file "../../x"`},
		{"dir ../d", func(string) *backup.Manifest {
			return forged([]backup.Dir{{Path: "../d", Mode: 0o700}}, nil, nil)
		}, `directory "../d"`},
		{"OID ../../victim", func(base string) *backup.Manifest {
			return forged([]backup.Dir{{Path: "pg_tblspc", Mode: 0o700}}, nil, []backup.Tablespace{{OID: "../../victim", Location: filepath.Join(base, "spc")}})
		}, `OID "../../victim"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			repoDir := filepath.Join(base, "repo")
			cfg := filepath.Join(base, "agent.yaml")
			if err := os.WriteFile(cfg, []byte("cluster: main\nnode: {name: n1}\npostgres: {pgdata: "+filepath.Join(base, "unused")+
				"}\nrepos: [{name: local, url: 'file://"+repoDir+"'}]\nencryption: {disabled: true}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			m := c.m(base)
			writeForgedManifest(t, repoDir, m)
			sentinels := map[string]string{filepath.Join(base, "a", "x"): "keep x", filepath.Join(base, "a", "victim"): "keep victim"}
			for p, body := range sentinels {
				os.MkdirAll(filepath.Dir(p), 0o700)
				if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			pgdata := filepath.Join(base, "a", "b", "pgdata")
			r := runAgent(t, nil, "restore", "--config", cfg, "--backup", m.ID, "--pgdata", pgdata)
			stderr := strings.ReplaceAll(r.stderr, `\"`, `"`) // the log quotes the error
			if r.code == 0 || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "refusing the manifest") {
				t.Fatalf("restore of a forged manifest: exit %d, want a refusal naming %q\nstdout: %s\nstderr: %s", r.code, c.want, r.stdout, r.stderr)
			}
			for p, body := range sentinels {
				if b, err := os.ReadFile(p); err != nil || string(b) != body {
					t.Errorf("%s after the refused restore: %q %v, want %q", p, b, err, body)
				}
			}
			for _, p := range []string{"a/b/pgdata", "a/b/d", "spc"} {
				if _, err := os.Lstat(filepath.Join(base, p)); err == nil {
					t.Errorf("%s exists after the refused restore", p)
				}
			}
		})
	}
}

// forged is a minimal full backup's manifest with the given layout (every
// file empty, so that no object is needed).
func forged(dirs []backup.Dir, files []backup.File, tss []backup.Tablespace) *backup.Manifest {
	now := time.Now().UTC()
	return &backup.Manifest{Format: backup.ManifestFormat, ID: "20261126T081700F", Type: backup.TypeFull, Cluster: "main", Node: "n1",
		StartTime: now, StopTime: now, Timeline: 1, SegmentSize: 16 << 20, BackupLabel: []byte("START WAL LOCATION: 0/2000028\n"),
		Dirs: dirs, Files: files, Tablespaces: tss}
}

// writeForgedManifest stores m in the file repository at repoDir as the
// agent writes manifests (zstd, unencrypted).
func writeForgedManifest(t *testing.T, repoDir string, m *backup.Manifest) {
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
	p := filepath.Join(repoDir, m.Cluster, "backup", m.ID, "backup.manifest")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}
