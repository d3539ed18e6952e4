package orders

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestDropSlot: a DropSlot order drops an unused managed slot, answers a
// slot already gone with success, and refuses a slot in use and a name
// pgdr does not manage, leaving them.
func TestDropSlot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{Conf: map[string]string{"max_wal_senders": "4"}})
	pg.Start(t)
	log := slog.New(slog.DiscardHandler)
	x := New(&config.Config{Postgres: config.Postgres{PGData: pg.PGData, DSN: pg.DSN()}},
		Deps{Log: log, PG: pgctl.New(pgctl.Config{PGData: pg.PGData, DSN: pg.DSN(), Log: log})})
	ctx := context.Background()
	pg.Exec(t, "SELECT pg_create_physical_replication_slot('pgdr_pg_b1', true); SELECT pg_create_physical_replication_slot('users_slot', true); SELECT pg_create_physical_replication_slot('pgdr_busy', true)")
	count := func(name string) string {
		return pg.QueryString(t, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1", name)
	}
	if out, err := x.dropSlot(ctx, "pgdr_pg_b1", "test"); err != nil || !strings.Contains(out, "dropped") {
		t.Fatalf("drop: %q %v", out, err)
	}
	if count("pgdr_pg_b1") != "0" {
		t.Fatal("the slot is still there")
	}
	if out, err := x.dropSlot(ctx, "pgdr_pg_b1", "test"); err != nil || !strings.Contains(out, "already gone") {
		t.Fatalf("drop of a missing slot: %q %v", out, err)
	}
	if _, err := x.dropSlot(ctx, "users_slot", "test"); err == nil || !strings.Contains(err.Error(), "manages only") {
		t.Fatalf("a user's slot: %v", err)
	}
	// pg_receivewal streaming through pgdr_busy makes it active.
	rctx, stop := context.WithCancel(ctx)
	recv := pg.Command(rctx, "pg_receivewal", "-D", pgtest.OwnedDir(t, "recv-"), "-S", "pgdr_busy", "-n", "-w")
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stop(); recv.Wait() }()
	testutil.WaitFor(t, 30*time.Second, "pgdr_busy active", func() (bool, error) {
		return pg.QueryString(t, "SELECT active::text FROM pg_replication_slots WHERE slot_name = 'pgdr_busy'") == "true", nil
	})
	if _, err := x.dropSlot(ctx, "pgdr_busy", "test"); err == nil || !strings.Contains(err.Error(), "uses it") {
		t.Fatalf("an active slot: %v", err)
	}
	if count("users_slot") != "1" || count("pgdr_busy") != "1" {
		t.Fatal("a refused drop removed a slot")
	}
}
