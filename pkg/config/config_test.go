package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `
cluster: main
node: {name: pg-a1, region: us-east-1}
postgres:
  pgdata: /var/lib/postgresql/15/main
  dsn: "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
repos:
  - name: local
    url: file:///var/lib/pgdr/repo
  - name: dr
    url: s3://pgdr-backups/main
    s3: {endpoint: "http://127.0.0.1:7070", region: us-east-1, path_style: true}
compression: {method: zstd, level: 3}
encryption:
  recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
  identity_file: /etc/pgdr/identity.txt
wal: {push_concurrency: 4, prefetch: 8}
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "main" || cfg.Node.Name != "pg-a1" || len(cfg.Repos) != 2 || !cfg.Repos[1].S3.PathStyle {
		t.Fatalf("parsed %+v", cfg)
	}
	if cfg.Postgres.BinDir != "/usr/lib/postgresql/15/bin" || cfg.Agent.Socket == "" || cfg.Agent.LogLevel != "info" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestDeployExampleIsValid(t *testing.T) {
	// The example shipped in deploy/ must stay loadable.
	p := filepath.Join("..", "..", "deploy", "pgdr-agent.example.yaml")
	if _, err := Load(p); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct{ name, from, to, field string }{
		{"unknown key", "wal: {", "wall: {", "unknown key wall (did you mean wal?)"},
		{"misspelt nested key", "push_concurrency: 4", "push_concurency: 4", "unknown key wal.push_concurency (did you mean wal.push_concurrency?)"},
		{"no cluster", "cluster: main", "cluster: ''", "cluster"},
		{"bad cluster name", "cluster: main", "cluster: 'a b'", "cluster"},
		{"no node", "node: {name: pg-a1, region: us-east-1}", "node: {region: x}", "node.name"},
		{"relative pgdata", "pgdata: /var/lib/postgresql/15/main", "pgdata: main", "postgres.pgdata"},
		{"unknown scheme", "url: s3://pgdr-backups/main", "url: gs://pgdr-backups/main", "repos[1].url"},
		{"file URL with host", "url: file:///var/lib/pgdr/repo", "url: file://var/lib/pgdr/repo", "repos[0].url"},
		{"duplicate repo", "name: dr", "name: local", "repos[1].name"},
		{"s3 block on file repo", "url: s3://pgdr-backups/main", "url: file:///x", "repos[1].s3"},
		{"bad endpoint", `endpoint: "http://127.0.0.1:7070"`, `endpoint: "127.0.0.1:7070"`, "repos[1].s3.endpoint"},
		{"bad compression", "method: zstd", "method: lz5", "compression.method"},
		{"bad level", "level: 3", "level: 40", "compression.level"},
		{"bad recipient", `["age1ql3z`, `["ssh-ed25519 age1ql3z`, "encryption.recipients[0]"},
		{"push concurrency", "push_concurrency: 4", "push_concurrency: -1", "wal.push_concurrency"},
		{"inline secret", "path_style: true}", "path_style: true, secret_access_key: abc}", "secret_access_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(good, c.from) {
				t.Fatalf("test case edits %q, not in the example", c.from)
			}
			_, err := Parse([]byte(strings.Replace(good, c.from, c.to, 1)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name %s", err, c.field)
			}
		})
	}
}

func TestEncryptionChoiceIsExplicit(t *testing.T) {
	base := "cluster: c\nnode: {name: n}\npostgres: {pgdata: /d}\nrepos: [{url: 'file:///r'}]\n"
	if _, err := Parse([]byte(base)); err == nil || !strings.Contains(err.Error(), "disabled: true") {
		t.Fatalf("no encryption section: %v", err)
	}
	cfg, err := Parse([]byte(base + "encryption: {disabled: true}\n"))
	if err != nil || !cfg.Encryption.Disabled {
		t.Fatalf("explicit opt-out: %v", err)
	}
	if _, err := Parse([]byte(base + "encryption: {disabled: true, recipients: [age1x]}\n")); err == nil {
		t.Fatal("disabled together with recipients was accepted")
	}
	var fe *FieldError
	_, err = Parse([]byte(base))
	if !errors.As(err, &fe) || fe.Field != "encryption" {
		t.Fatalf("want a FieldError on encryption, got %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "empty.yaml")
	os.WriteFile(p, nil, 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
}

func TestReadSecretFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	os.WriteFile(p, []byte("  sekrit\n"), 0o600)
	if s, err := ReadSecretFile(p); err != nil || s != "sekrit" {
		t.Fatalf("ReadSecretFile = %q, %v", s, err)
	}
	os.WriteFile(p, []byte("\n"), 0o600)
	if _, err := ReadSecretFile(p); err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("empty secret: %v", err)
	}
}

// TestSigning: signing is configured by a key file or public keys, require
// defaults to true then, and bad public keys or a require without keys
// are refused naming the field.
func TestSigning(t *testing.T) {
	base := "cluster: c\nnode: {name: n}\npostgres: {pgdata: /d}\nrepos: [{url: 'file:///r'}]\nencryption: {disabled: true}\n"
	for _, c := range []struct {
		yaml                 string
		configured, required bool
	}{
		{"", false, false},
		{"signing: {key_file: /k}\n", true, true},
		{"signing: {public_keys: ['pgdr-ed25519:AAAA']}\n", true, true},
		{"signing: {public_keys_file: /p, require: false}\n", true, false},
	} {
		cfg, err := Parse([]byte(base + c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		if cfg.Signing.Configured() != c.configured || cfg.Signing.Required() != c.required {
			t.Fatalf("%q: configured %v required %v, want %v %v", c.yaml, cfg.Signing.Configured(), cfg.Signing.Required(), c.configured, c.required)
		}
	}
	for _, c := range []struct{ yaml, field string }{
		{"signing: {public_keys: ['age1xyz']}\n", "signing.public_keys[0]"},
		{"signing: {require: true}\n", "signing.require"},
	} {
		var fe *FieldError
		if _, err := Parse([]byte(base + c.yaml)); !errors.As(err, &fe) || fe.Field != c.field {
			t.Fatalf("%q: %v, want a FieldError on %s", c.yaml, err, c.field)
		}
	}
}

// TestTooManyRepos: a node reports the archive RPO of each repository and
// the coordinator refuses reports listing more than MaxRepos, so the
// configuration refuses more.
func TestTooManyRepos(t *testing.T) {
	repos := "repos:\n  - name: local\n    url: file:///var/lib/pgdr/repo\n"
	for i := range MaxRepos {
		repos += fmt.Sprintf("  - name: r%d\n    url: file:///var/lib/pgdr/r%d\n", i, i)
	}
	i := strings.Index(good, "repos:")
	j := strings.Index(good, "compression:")
	_, err := Parse([]byte(good[:i] + repos + good[j:]))
	if err == nil || !strings.Contains(err.Error(), "repos") {
		t.Fatalf("%d repositories: %v; want an error naming repos", MaxRepos+1, err)
	}
}

func TestWALReceive(t *testing.T) {
	cfg, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.WAL.Receive
	if r.Enabled || r.Synchronous || r.Slot != "pgdr_pg_a1" || r.SpoolDir != "/var/lib/postgresql/15/pgdr/walrecv-main-pg-a1" || r.UploadInterval.Duration != time.Second {
		t.Fatalf("defaults: %+v", r)
	}
	on := strings.Replace(good, "wal: {push_concurrency: 4, prefetch: 8}", "wal: {push_concurrency: 4, prefetch: 8, receive: {enabled: true, synchronous: true, slot: my_slot, spool_dir: /srv/spool, upload_interval: 250ms}}", 1)
	cfg, err = Parse([]byte(on))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.WAL.Receive; !r.Enabled || !r.Synchronous || r.Slot != "my_slot" || r.SpoolDir != "/srv/spool" || r.UploadInterval.Duration != 250*time.Millisecond {
		t.Fatalf("parsed %+v", r)
	}
	// Beside the data directory (the default's parent) is fine.
	if _, err := Parse([]byte(strings.Replace(good, "prefetch: 8}", "prefetch: 8, receive: {enabled: true, spool_dir: /var/lib/postgresql/15/main-spool}}", 1))); err != nil {
		t.Fatalf("a spool beside pgdata: %v", err)
	}
	for _, c := range []struct{ to, field string }{
		{"receive: {enabled: true, slot: My-Slot}", "wal.receive.slot"},
		{"receive: {enabled: true, spool_dir: spool}", "wal.receive.spool_dir"},
		{"receive: {enabled: true, upload_interval: 10ms}", "wal.receive.upload_interval"},
		{"receive: {enabled: true, upload_interval: soon}", "wal.receive.upload_interval"},
		{"receive: {synchronous: true}", "wal.receive.synchronous"},
		{"receive: {enabeld: true}", "wal.receive.enabeld"},
		// Inside the data directory (pg_wal: PostgreSQL removes and
		// recycles what it finds there) or inside a file repository.
		{"receive: {enabled: true, spool_dir: /var/lib/postgresql/15/main/pg_wal}", "wal.receive.spool_dir"},
		{"receive: {enabled: true, spool_dir: /var/lib/postgresql/15/main}", "wal.receive.spool_dir"},
		{"receive: {enabled: true, spool_dir: /var/lib/postgresql/15/main/../main/spool}", "wal.receive.spool_dir"},
		{"receive: {enabled: true, spool_dir: /var/lib/pgdr/repo/spool}", "wal.receive.spool_dir"},
	} {
		_, err := Parse([]byte(strings.Replace(good, "prefetch: 8}", "prefetch: 8, "+c.to+"}", 1)))
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %v does not name %s", c.to, err, c.field)
		}
	}
}
