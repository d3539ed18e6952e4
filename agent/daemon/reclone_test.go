package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestRecloneWiring: the daemon's recloner copies with the orders' DSN
// helpers (the copy's conninfo names this node, also in a URL DSN; the
// error names where the DSN connects and never its password) and, when
// the copy fails, puts the old data directory back.
func TestRecloneWiring(t *testing.T) {
	pgdata := filepath.Join(t.TempDir(), "pgdata")
	if err := os.MkdirAll(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	args := filepath.Join(bin, "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + args + "\necho 'pg_basebackup: error: connection to server failed: Connection refused' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.Node.Name = "pg-a1"
	cfg.Postgres.PGData = pgdata
	cfg.Postgres.BinDir = bin
	log := slog.New(slog.DiscardHandler)
	r := newRecloner(cfg, newPG(cfg, log), log, func() error { return nil }, func(context.Context) *pgdrv1.HealthReport { return nil })
	why := errors.New("pg_rewind cannot rejoin this node: it needs wal_log_hints=on or data checksums")
	_, err := r.Reclone(context.Background(), 3, "pg-a2", "postgres://postgres:secret@127.0.0.1:1/postgres", why)
	if err == nil {
		t.Fatal("reclone succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"wal_log_hints", "the fresh copy from pg-a2 failed", "pg_basebackup from 127.0.0.1:1", "Connection refused", "back in place"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "secret") {
		t.Errorf("the error quotes the password: %s", msg)
	}
	b, err := os.ReadFile(args)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); len(got) < 4 || got[2] != "-d" || got[3] != "postgres://postgres:secret@127.0.0.1:1/postgres?application_name=pg-a1" {
		t.Errorf("pg_basebackup args %q: want -d with application_name=pg-a1", got)
	}
	if b, err := os.ReadFile(filepath.Join(pgdata, "PG_VERSION")); err != nil || string(b) != "15\n" {
		t.Errorf("the old data directory is not back: %q %v", b, err)
	}
}
