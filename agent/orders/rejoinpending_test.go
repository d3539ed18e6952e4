package orders

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
)

// TestRejoinDropsSourcePromotePending: review 12. pg_rewind copies the
// source's pgdr.promote-pending (its own promotion's guard, when the
// rewind runs while that promotion is pending): left in the rewound data
// directory, the agent here would take it for its own from another boot
// and fence the node on its next start. The rejoined node is not
// promoting (PostgreSQL was stopped before the rewind, which drops a
// requested promotion): no record is left, whoever wrote it. Fakes:
// pg_controldata says data checksums are on, pg_rewind writes the
// source's record, pg_ctl fails to start (the test ends there).
func TestRejoinDropsSourcePromotePending(t *testing.T) {
	pgdata := filepath.Join(t.TempDir(), "pgdata")
	if err := os.MkdirAll(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	// This node's own record, from an earlier promotion of its own.
	if err := os.WriteFile(filepath.Join(pgdata, "pgdr.promote-pending"), []byte(`{"epoch":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := fakeBin(t, map[string]string{
		"pg_controldata": "echo 'Data page checksum version:           1'",
		// --target-pgdata DIR: the source's record lands in the target.
		"pg_rewind": `echo '{"epoch":7,"boot_id":"the-source"}' > "$2/pgdr.promote-pending"; echo 'pg_rewind: Done!'`,
		"pg_ctl":    "echo 'pg_ctl: could not start server' >&2; exit 1",
	})
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "pg-a1"}, Postgres: config.Postgres{PGData: pgdata, BinDir: bin}}
	log := slog.New(slog.DiscardHandler)
	pg := pgctl.New(pgctl.Config{BinDir: bin, PGData: pgdata, Log: log})
	x := New(cfg, Deps{Log: log, PG: pg, Unfence: func() error { return nil },
		Reclone: func(_ context.Context, _ uint64, _, _ string, why error) (string, error) {
			t.Errorf("re-cloned: %v", why)
			return "", why
		}})
	_, err := x.rejoin(t.Context(), "cmd-1", 3, "pg-a2", "host=127.0.0.1 port=1 user=postgres connect_timeout=1")
	if err == nil || !strings.Contains(err.Error(), "could not start server") {
		t.Fatalf("rejoin = %v, want the fake pg_ctl's failure to start", err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "standby.signal")); err != nil {
		t.Fatalf("the rejoin did not get past pg_rewind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "pgdr.promote-pending")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the rewound data directory holds the source's pgdr.promote-pending (%v): the agent here would fence the node on its next start", err)
	}
}
