package reclone

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/restore"
	"github.com/pgdr/pgdr/pkg/config"
)

// TestRecloneNoBackupSource: pg_basebackup fails (after writing part of a
// copy) and no backup can be restored instead — no repository, no
// identity, or a repository without backups: the error names all three
// failures (rewind, copy, backup), the original data directory is back in
// place and nothing is left beside it.
func TestRecloneNoBackupSource(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, cfg *config.Config)
		want  string
	}{
		{"no repos", func(t *testing.T, cfg *config.Config) {}, "no backup source: the agent configuration has no repos"},
		{"no identity", func(t *testing.T, cfg *config.Config) {
			cfg.Repos = []config.Repo{{Name: "local", URL: "file://" + t.TempDir()}}
			cfg.Path = filepath.Join(t.TempDir(), "agent.yaml")
		}, "no backup source: encryption.identity_file is not set"},
		{"no backup", func(t *testing.T, cfg *config.Config) {
			cfg.Repos = []config.Repo{{Name: "local", URL: "file://" + t.TempDir()}}
			cfg.Path = filepath.Join(t.TempDir(), "agent.yaml")
			cfg.Cluster = "main"
			id, err := age.GenerateX25519Identity()
			if err != nil {
				t.Fatal(err)
			}
			cfg.Encryption.IdentityFile = filepath.Join(t.TempDir(), "identity.txt")
			if err := os.WriteFile(cfg.Encryption.IdentityFile, []byte(id.String()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "no repository holds any backup of cluster main"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pgdata, files := fakeDataDir(t)
			r, _ := fakeRecloner(t, pgdata, `mkdir -p "$dir/base/1" && echo partial > "$dir/base/1/1259"; echo 'pg_basebackup: error: FATAL:  must be superuser or replication role' >&2; exit 1`)
			tc.setup(t, r.cfg)
			why := errors.New("pg_rewind cannot rejoin this node: it needs wal_log_hints=on or data checksums")
			_, err := r.Reclone(context.Background(), 3, "pg-a2", "host=127.0.0.1 port=1 user=norepl password=secret", why)
			if err == nil {
				t.Fatal("reclone succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			for _, want := range []string{"wal_log_hints", "pg_basebackup from 127.0.0.1:1", "replication role",
				"restoring the latest backup instead failed", tc.want, "back in place"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %s", want, msg)
				}
			}
			if strings.Contains(msg, "secret") {
				t.Errorf("the error quotes the password: %s", msg)
			}
			checkFiles(t, pgdata, files)
			if s := siblings(t, pgdata); len(s) != 0 {
				t.Errorf("left beside the data directory: %v", s)
			}
		})
	}
}

// TestEnsureRestoreCommand: the restore's restore_command replaces any
// other in postgresql.auto.conf; the other settings stay.
func TestEnsureRestoreCommand(t *testing.T) {
	pgdata := t.TempDir()
	auto := filepath.Join(pgdata, "postgresql.auto.conf")
	os.WriteFile(auto, []byte("work_mem = '8MB'\nrestore_command = 'agent wal-fetch --config agent.yaml %f %p'\nprimary_conninfo = 'host=x'\n"), 0o600)
	cfg := &config.Config{}
	cfg.Postgres.PGData = pgdata
	r := New(Deps{Cfg: cfg, PG: testPG(cfg, nil)})
	res := &restore.Result{RecoveryConf: []string{"restore_command = '/bin/agent wal-fetch --config /etc/agent.yaml %f %p'", "recovery_target_timeline = 'latest'"}}
	if err := r.ensureRestoreCommand(res); err != nil {
		t.Fatal(err)
	}
	want := "work_mem = '8MB'\nprimary_conninfo = 'host=x'\nrestore_command = '/bin/agent wal-fetch --config /etc/agent.yaml %f %p'\n"
	if got := readFileString(t, auto); got != want {
		t.Errorf("postgresql.auto.conf:\n%s\nwant:\n%s", got, want)
	}
	if err := r.ensureRestoreCommand(&restore.Result{}); err == nil {
		t.Error("no restore_command from the restore: no error")
	}
}

func readFileString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestEmptyDir: everything inside goes, the directory stays.
func TestEmptyDir(t *testing.T) {
	dir, _ := fakeDataDir(t)
	if err := emptyDir(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Fatalf("after emptyDir: %v %v", ents, err)
	}
}
