package pgctl

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunHidesPasswords: a failing PostgreSQL program's error names its
// arguments, but never a password in a connection string.
func TestRunHidesPasswords(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pg_rewind"), []byte("#!/bin/sh\necho failed >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := New(Config{BinDir: dir, PGData: dir})
	_, err := c.Run(context.Background(), "pg_rewind", "--target-pgdata", dir,
		"--source-server", "host=10.0.0.1 port=5432 user=postgres password=s3cr3t")
	if err == nil {
		t.Fatal("a failing program reported success")
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cr3t") {
		t.Fatalf("the error shows the password: %s", msg)
	}
	if !strings.Contains(msg, "--target-pgdata "+dir) || !strings.Contains(msg, "host=10.0.0.1") {
		t.Fatalf("the error lost the arguments that are safe to show: %s", msg)
	}
}
