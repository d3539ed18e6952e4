package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

// TestConfigCheckProbesRepositories: config check contacts every
// repository and says in plain words what is wrong — a missing bucket, a
// wrong secret, an endpoint where nothing listens, a file repository the
// archiving user cannot write — and leaves nothing behind on success.
func TestConfigCheckProbesRepositories(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an S3 server")
	}
	s3 := s3server.Start(t)
	s3.CreateBucket(t, "pgdr-backups")
	dir := pgtest.OwnedDir(t, "pgdr-config-check-")
	idFile := filepath.Join(dir, "s3-key-id")
	secret := filepath.Join(dir, "s3-secret")
	wrongSecret := filepath.Join(dir, "s3-wrong-secret")
	os.WriteFile(idFile, []byte(s3.AccessKey+"\n"), 0o644)
	os.WriteFile(secret, []byte(s3.SecretKey+"\n"), 0o644)
	os.WriteFile(wrongSecret, []byte("not-the-secret\n"), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	fileRepo := filepath.Join(dir, "repo")
	os.Mkdir(fileRepo, 0o755)
	pgtest.Chown(t, fileRepo)
	rootOnly := filepath.Join(dir, "root-only")
	os.Mkdir(rootOnly, 0o755) // owned by root: the postgres user cannot write it

	base := "cluster: main\nnode: {name: n1}\npostgres: {pgdata: /tmp/x}\nencryption: {disabled: true}\n"
	s3repo := func(bucket, endpoint, secretFile string) string {
		return fmt.Sprintf("repos: [{name: dr, url: 's3://%s/main', s3: {endpoint: '%s', region: us-east-1, path_style: true, access_key_id_file: %s, secret_access_key_file: %s, max_attempts: 1}}]\n",
			bucket, endpoint, idFile, secretFile)
	}
	cases := []struct {
		name, yaml string
		want       []string // substrings of stderr; none: must pass
	}{
		{"working s3 and file repositories", base + fmt.Sprintf("repos: [{name: local, url: 'file://%s'}, %s", fileRepo, strings.TrimPrefix(s3repo("pgdr-backups", s3.Endpoint, secret), "repos: [")), nil},
		{"missing bucket", base + s3repo("no-such-bucket", s3.Endpoint, secret),
			[]string{"repository dr", "bucket no-such-bucket does not exist at " + s3.Endpoint, "create it first"}},
		{"wrong secret", base + s3repo("pgdr-backups", s3.Endpoint, wrongSecret),
			[]string{"repository dr", "secret access key is wrong"}},
		{"nothing listening", base + s3repo("pgdr-backups", "http://"+closed, secret),
			[]string{"repository dr", "nothing answers at the S3 endpoint", "connection refused"}},
		{"unwritable file repository", base + fmt.Sprintf("repos: [{name: local, url: 'file://%s'}]\n", rootOnly),
			[]string{"repository local", "writing a test object failed", "permission denied"}},
		{"missing file repository", base + fmt.Sprintf("repos: [{name: local, url: 'file://%s/nope'}]\n", dir),
			[]string{"repository local", "does not exist yet"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			os.WriteFile(p, []byte(c.yaml), 0o644)
			r := runAgentCred(t, pgtest.Credential(t), nil, "config", "check", "--config", p)
			if len(c.want) == 0 {
				if r.code != 0 || !strings.Contains(r.stdout, "OK") {
					t.Fatalf("config check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
				}
				left, _ := filepath.Glob(filepath.Join(fileRepo, ".pgdr-probe-*"))
				s3left, _ := filepath.Glob(filepath.Join(s3.Dir, "pgdr-backups", "main", ".pgdr-probe-*"))
				if len(left)+len(s3left) > 0 {
					t.Fatalf("the probe left objects behind: %v %v", left, s3left)
				}
				if _, err := os.Stat(filepath.Join(fileRepo, "main")); err == nil {
					t.Fatalf("the probe created the cluster's directory in the file repository")
				}
				return
			}
			if r.code == 0 {
				t.Fatalf("config check passed:\n%s", r.stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if r2 := runAgentCred(t, pgtest.Credential(t), nil, "config", "check", "--no-probe", "--config", p); r2.code != 0 {
				t.Errorf("config check --no-probe: exit %d\n%s", r2.code, r2.stderr)
			}
		})
	}
}
