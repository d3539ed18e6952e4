package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

// The repository is untrusted storage: anyone with write access to the
// bucket, no key needed, can replace objects. These tests forge what such
// a writer can and check that the real binary refuses it.

// encodeObject returns plain as an object with opts (PlainSize -1 unless
// set).
func encodeObject(t *testing.T, plain []byte, opts objstream.Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := objstream.NewWriter(&buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readManifestFile decodes the manifest object at path without any check
// of its origin (what a forger can do: manifests are not encrypted).
func readManifestFile(t *testing.T, path string) *backup.Manifest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	or, err := objstream.NewReader(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(or)
	if err != nil {
		t.Fatal(err)
	}
	var m backup.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// forgeBackup replaces the backup's copy of postgresql.auto.conf with the
// attacker's (encrypted to the lab's public recipient, as anyone can) and
// rewrites the manifest's checksum and size for it, and returns the
// manifest's path and the forged manifest's JSON.
func forgeBackup(t *testing.T, l *lab, id string) (string, []byte) {
	t.Helper()
	mpath := filepath.Join(l.repoDir, "main", "backup", id, "backup.manifest")
	m := readManifestFile(t, mpath)
	rcpt, err := age.ParseX25519Recipient(l.recipient)
	if err != nil {
		t.Fatal(err)
	}
	evil := []byte("archive_command = 'touch /tmp/pgdr-forged-backup'\n")
	sum := sha256.Sum256(evil)
	forged := false
	for i := range m.Files {
		f := &m.Files[i]
		if f.Path != "postgresql.auto.conf" {
			continue
		}
		if f.Object == "" || len(f.Parts) > 0 {
			t.Fatalf("postgresql.auto.conf is stored as %+v, want one object", f)
		}
		obj := encodeObject(t, evil, objstream.Options{Recipients: []age.Recipient{rcpt}, PlainSize: int64(len(evil))})
		if err := os.WriteFile(l.backupObjectPath(f.Object), obj, 0o644); err != nil {
			t.Fatal(err)
		}
		f.Size, f.SHA256, f.BLAKE3 = int64(len(evil)), hex.EncodeToString(sum[:]), ""
		forged = true
	}
	if !forged {
		t.Fatal("postgresql.auto.conf is not in the manifest")
	}
	body, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return mpath, body
}

// wantRefused checks that backup-verify and restore (files only) of id
// fail, and that the failure names what was refused.
func wantRefused(t *testing.T, l *lab, id string, why ...string) {
	t.Helper()
	r := runAgent(t, nil, "backup-verify", "--config", l.cfg, id)
	if r.code == 0 || strings.Contains(r.stdout, "OK") {
		t.Fatalf("backup-verify of the forged backup: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	for _, w := range why {
		if !strings.Contains(r.stdout+r.stderr, w) {
			t.Fatalf("backup-verify failed without naming %q:\nstdout: %s\nstderr: %s", w, r.stdout, r.stderr)
		}
	}
	t.Logf("backup-verify refused the forged backup: exit %d: %s", r.code, tail(strings.TrimSpace(r.stdout+r.stderr), 600))
	c := pgtest.Empty(t, pgtest.Options{})
	r = runAgent(t, nil, "restore", "--config", l.cfg, "--backup", id, "--pgdata", c.PGData, "--no-archive", "--json")
	if r.code == 0 || r.code == 2 {
		t.Fatalf("restore of the forged backup: exit %d, want a failure (not a usage error)\nstdout: %s\nstderr: %s", r.code, r.stdout, tail(r.stderr, 2000))
	}
	for _, w := range why {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("restore failed without naming %q:\n%s", w, r.stdout)
		}
	}
	if b, err := os.ReadFile(filepath.Join(c.PGData, "postgresql.auto.conf")); err == nil && bytes.Contains(b, []byte("pgdr-forged-backup")) {
		t.Fatalf("restore wrote the forged postgresql.auto.conf")
	}
	t.Logf("restore refused the forged backup: exit %d: %s", r.code, strings.TrimSpace(r.stdout))
}

// TestForgedRepositoryRefused: a forged unencrypted WAL segment, a genuine
// segment stored under another segment's name, and a backup whose data
// object and manifest checksums were replaced are refused by wal-fetch
// (exit >= 126, nothing installed), backup-verify and restore.
func TestForgedRepositoryRefused(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE t(i int); INSERT INTO t SELECT generate_series(1, 1000)")
	id := l.backup(t, l.cfg)
	prev := l.switchWAL(t)
	l.pg.Exec(t, "INSERT INTO t SELECT generate_series(1, 1000)")
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)
	if r := mustAgent(t, "backup-verify", "--config", l.cfg, id); !strings.Contains(r.stdout, "OK") {
		t.Fatalf("backup-verify of the genuine backup:\n%s", r.stdout)
	}

	fetch := func(t *testing.T, name string) (result, string) {
		dest := filepath.Join(t.TempDir(), name)
		return runAgent(t, nil, "wal-fetch", "--config", l.cfg, name, dest), dest
	}
	if r, _ := fetch(t, last); r.code != 0 {
		t.Fatalf("wal-fetch of the genuine %s: exit %d\n%s", last, r.code, r.stderr)
	}

	t.Run("unencrypted WAL segment", func(t *testing.T) {
		seg, err := os.ReadFile(filepath.Join(l.pg.PGData, "pg_wal", last))
		if err != nil {
			t.Fatal(err)
		}
		seg[len(seg)/2] ^= 0xff // the attacker's content
		obj := encodeObject(t, seg, objstream.Options{Unencrypted: true, PlainSize: int64(len(seg))})
		path := l.objectPath(last)
		saved, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(path, saved, 0o644)
		if err := os.WriteFile(path, obj, 0o644); err != nil {
			t.Fatal(err)
		}
		r, dest := fetch(t, last)
		if r.code < 126 || !strings.Contains(r.stderr, last) {
			t.Fatalf("wal-fetch of a forged unencrypted %s: exit %d, want >= 126 naming it\n%s", last, r.code, r.stderr)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatalf("wal-fetch installed the forged segment at %s", dest)
		}
		t.Logf("wal-fetch refused: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	})

	t.Run("genuine segment under another name", func(t *testing.T) {
		if _, err := wal.ParseName(prev); err != nil || prev == last {
			t.Fatalf("previous segment %q: %v", prev, err)
		}
		path := l.objectPath(last)
		saved, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(path, saved, 0o644)
		other, err := os.ReadFile(l.objectPath(prev))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, other, 0o644); err != nil {
			t.Fatal(err)
		}
		r, dest := fetch(t, last)
		if r.code < 126 || !strings.Contains(r.stderr, last) {
			t.Fatalf("wal-fetch of %s holding %s's object: exit %d, want >= 126 naming it\n%s", last, prev, r.code, r.stderr)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatalf("wal-fetch installed another segment's content at %s", dest)
		}
		t.Logf("wal-fetch refused: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	})

	t.Run("manifest with rewritten checksums", func(t *testing.T) {
		mpath, body := forgeBackup(t, l, id)
		sum := sha256.Sum256(body)
		obj := encodeObject(t, body, objstream.Options{Unencrypted: true, PlainSize: int64(len(body)), PlainSHA256: sum[:]})
		if err := os.WriteFile(mpath, obj, 0o644); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, l, id, "backup.manifest")
	})

	// The forger has a signing key of their own, not one the readers
	// trust.
	t.Run("manifest re-signed with another key", func(t *testing.T) {
		mpath, body := forgeBackup(t, l, id)
		evilKey := filepath.Join(t.TempDir(), "evil.key")
		pk, err := objstream.GenerateSigningKey(evilKey)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := objstream.LoadSigner(evilKey)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		obj := encodeObject(t, body, objstream.Options{Unencrypted: true, PlainSize: int64(len(body)), PlainSHA256: sum[:],
			Signer: signer, Name: "main/backup/" + id + "/backup.manifest"})
		if err := os.WriteFile(mpath, obj, 0o644); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, l, id, "backup.manifest", pk.ID())
	})
}
