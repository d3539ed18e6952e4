package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDefaultSocketBesideDataDirectory: the default agent socket is not a
// predictable name in the shared temporary directory, where any local user
// could bind it first (issue 13 item 5), but in a directory of its own
// next to the data directory, whose parent belongs to PostgreSQL's user.
func TestDefaultSocketBesideDataDirectory(t *testing.T) {
	cfg, err := Parse([]byte("cluster: main\nnode: {name: pg-a1}\npostgres: {pgdata: /var/lib/postgresql/15/main}\nrepos: [{url: 'file:///r'}]\nencryption: {disabled: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "/var/lib/postgresql/15/pgdr/main-pg-a1.sock"; cfg.Agent.Socket != want {
		t.Fatalf("default agent.socket %s, want %s", cfg.Agent.Socket, want)
	}
	if strings.HasPrefix(cfg.Agent.Socket, filepath.Clean(os.TempDir())+"/") {
		t.Fatalf("default agent.socket %s is in the shared temporary directory", cfg.Agent.Socket)
	}
}
