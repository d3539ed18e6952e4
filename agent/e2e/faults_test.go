package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/cli"
)

// objectPath is where the file repository keeps an archived WAL file.
func (l *lab) objectPath(name string) string {
	return filepath.Join(l.repoDir, "main", "wal", name[:8], name)
}

// TestFetchDamagedObjects: a wrong identity, a flipped byte and a truncated
// object each give a clear error naming the object, and wal-fetch exits
// >= 126 (recovery aborts) — while a file that is not archived exits 1.
func TestFetchDamagedObjects(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	var segs []string
	for range 4 {
		segs = append(segs, l.switchWAL(t))
	}
	l.waitArchived(t, segs[len(segs)-1], 2*time.Minute)
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")

	// The intact object comes back.
	mustAgent(t, "wal-fetch", "--config", l.cfg, segs[0], dest)

	// Not in the archive: exit 1, recovery may end there.
	if r := runAgent(t, nil, "wal-fetch", "--config", l.cfg, "0000000100000000000000FF", dest); r.code != 1 {
		t.Fatalf("missing file: exit %d, want 1\n%s", r.code, r.stderr)
	}
	if r := runAgent(t, nil, "wal-fetch", "--config", l.cfg, "00000009.history", dest); r.code != 1 {
		t.Fatalf("missing history file: exit %d, want 1\n%s", r.code, r.stderr)
	}

	// Wrong identity.
	other := filepath.Join(t.TempDir(), "other.txt")
	mustAgent(t, "keygen", "-o", other)
	wrongID := l.writeConfig(t, "wrong-identity.yaml", []string{"file"}, other, 0)
	r := runAgent(t, nil, "wal-fetch", "--config", wrongID, segs[0], dest)
	wantFatal(t, "wrong identity", r, segs[0])

	// A flipped byte in the middle of an object.
	flipped := segs[1]
	b, err := os.ReadFile(l.objectPath(flipped))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(l.objectPath(flipped), b, 0o644); err != nil {
		t.Fatal(err)
	}
	r = runAgent(t, nil, "wal-fetch", "--config", l.cfg, flipped, dest)
	wantFatal(t, "flipped byte", r, flipped)

	// A truncated object.
	truncated := segs[2]
	fi, err := os.Stat(l.objectPath(truncated))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(l.objectPath(truncated), fi.Size()*2/3); err != nil {
		t.Fatal(err)
	}
	r = runAgent(t, nil, "wal-fetch", "--config", l.cfg, truncated, dest)
	wantFatal(t, "truncated object", r, truncated)

	// No partial file is left at the destination by the failures.
	if _, err := os.Stat(dest); err == nil {
		os.Remove(dest)
	}
	r = runAgent(t, nil, "wal-fetch", "--config", l.cfg, truncated, dest)
	if _, err := os.Stat(dest); err == nil {
		t.Fatalf("a failed fetch left %s behind", dest)
	}

	// wal-verify names both damaged objects and fails.
	r = runAgent(t, nil, "wal-verify", "--config", l.cfg)
	if r.code == 0 {
		t.Fatalf("wal-verify passed with damaged objects:\n%s", r.stdout)
	}
	for _, name := range []string{flipped, truncated} {
		if !strings.Contains(r.stdout, name) {
			t.Errorf("wal-verify does not name %s:\n%s", name, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "FAILED main/wal/00000001/"+segs[3]) {
		t.Errorf("wal-verify reports the intact %s as failed:\n%s", segs[3], r.stdout)
	}
}

func wantFatal(t *testing.T, what string, r result, object string) {
	t.Helper()
	if r.code < 126 {
		t.Fatalf("%s: wal-fetch exit %d, want >= 126\n%s", what, r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, object) {
		t.Fatalf("%s: the error does not name %s:\n%s", what, object, r.stderr)
	}
}

// TestDuplicatePush: pushing the same content again succeeds; different
// content under an archived name is refused and the stored object is left
// exactly as it was.
func TestDuplicatePush(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	seg := l.switchWAL(t)
	l.waitArchived(t, seg, 2*time.Minute)
	stored, err := os.ReadFile(l.objectPath(seg))
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(filepath.Join(l.pg.PGData, "pg_wal", seg))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyPath := filepath.Join(dir, seg)
	os.WriteFile(copyPath, orig, 0o600)
	mustAgent(t, "wal-push", "--config", l.cfg, copyPath)

	changed := bytes.Clone(orig)
	changed[len(changed)-100] ^= 0xff
	os.WriteFile(copyPath, changed, 0o600)
	r := runAgent(t, nil, "wal-push", "--config", l.cfg, copyPath)
	if r.code == 0 {
		t.Fatal("a different content under an archived name was accepted")
	}
	if !strings.Contains(r.stderr, "different") || !strings.Contains(r.stderr, seg) {
		t.Fatalf("the refusal does not say what is wrong:\n%s", r.stderr)
	}
	after, err := os.ReadFile(l.objectPath(seg))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, stored) {
		t.Fatal("the stored object changed after a refused push")
	}

	// A segment of another cluster (its header's system identifier differs)
	// is refused too.
	foreign := bytes.Clone(orig)
	foreign[24] ^= 0x01
	next := filepath.Join(dir, "0000000100000000000000FE")
	os.WriteFile(next, foreign, 0o600)
	if r := runAgent(t, nil, "wal-push", "--config", l.cfg, next); r.code == 0 || !strings.Contains(r.stderr, "system identifier") {
		t.Fatalf("a foreign segment: exit %d\n%s", r.code, r.stderr)
	}
}

// TestBadConfig: malformed YAML, an unknown key, an unknown repository
// scheme and missing S3 credentials each give a clear error naming the
// problem, from config check and from wal-push alike.
func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	base := "cluster: main\nnode: {name: n1}\npostgres: {pgdata: /tmp/x}\nencryption: {disabled: true}\n"
	cases := []struct {
		name, yaml, want string
	}{
		{"malformed", "cluster: [main\n", "invalid YAML"},
		{"unknown key", base + "repos: [{url: 'file:///tmp/r'}]\nrepoz: 1\n", "repoz"},
		{"unknown scheme", base + "repos: [{url: 'ftp://host/x'}]\n", `unknown repository scheme "ftp"`},
		{"relative pgdata", "cluster: main\nnode: {name: n1}\npostgres: {pgdata: data}\nrepos: [{url: 'file:///tmp/r'}]\n", "postgres.pgdata"},
		{"no encryption choice", "cluster: main\nnode: {name: n1}\npostgres: {pgdata: /tmp/x}\nrepos: [{url: 'file:///tmp/r'}]\n", "encryption"},
		{"bad recipient", "cluster: main\nnode: {name: n1}\npostgres: {pgdata: /tmp/x}\nrepos: [{url: 'file:///tmp/r'}]\nencryption: {recipients: [nope]}\n", "encryption.recipients[0]"},
		{"missing s3 credentials", base + "repos: [{name: dr, url: 's3://b/p', s3: {endpoint: 'http://127.0.0.1:1'}}]\n", "credentials"},
		{"missing secret file", base + "repos: [{name: dr, url: 's3://b/p', s3: {access_key_id_file: /nonexistent/a, secret_access_key_file: /nonexistent/b}}]\n", "access_key_id_file"},
	}
	noCreds := []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials", "AWS_CONFIG_FILE=/nonexistent/config", "AWS_EC2_METADATA_DISABLED=true"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			os.WriteFile(p, []byte(c.yaml), 0o644)
			r := runAgent(t, noCreds, "config", "check", "--config", p)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("config check: exit %d, want an error containing %q:\n%s", r.code, c.want, r.stderr)
			}
			seg := filepath.Join(dir, "000000010000000000000001")
			os.WriteFile(seg, make([]byte, 100), 0o600)
			r = runAgent(t, noCreds, "wal-push", "--config", p, seg)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("wal-push: exit %d, want an error containing %q:\n%s", r.code, c.want, r.stderr)
			}
			r = runAgent(t, noCreds, "wal-fetch", "--config", p, "000000010000000000000001", filepath.Join(dir, "out"))
			if r.code != cli.ExitFatal {
				t.Fatalf("wal-fetch with a bad configuration: exit %d, want %d", r.code, cli.ExitFatal)
			}
		})
	}
}
