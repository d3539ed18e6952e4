package health

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestCheckPrimary runs the checks against a real PostgreSQL 15 primary,
// then with the server stopped (the report says what failed and keeps the
// disk figures), then started again (the kept connection is replaced).
func TestCheckPrimary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	c := NewChecker(Config{Cluster: "main", Node: "pg-a1", PGData: pg.PGData, DSN: pg.DSN()}, nil)
	defer c.Close(context.Background())
	ctx := context.Background()

	r := c.Check(ctx)
	if r.Error != "" || !r.PostmasterAlive || !r.Connectable || r.InRecovery {
		t.Fatalf("primary report: %v", r)
	}
	sysid := pg.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	if fmt.Sprint(r.SystemIdentifier) != sysid || r.Timeline != 1 || r.CurrentLsn == 0 || r.LagBytes != 0 || r.LagSeconds != 0 {
		t.Fatalf("primary report: %v (system identifier %s)", r, sysid)
	}
	if !strings.HasPrefix(r.PgVersion, "15") || r.PgdataFreeBytes == 0 || r.PgwalFreeBytes == 0 || r.Cluster != "main" || r.Node != "pg-a1" {
		t.Fatalf("primary report: %v", r)
	}
	pg.Exec(t, "CREATE TABLE t AS SELECT generate_series(1, 1000) i")
	if r2 := c.Check(ctx); r2.CurrentLsn <= r.CurrentLsn || r2.Error != "" {
		t.Fatalf("the LSN did not advance: %v then %v", r.CurrentLsn, r2)
	}

	pg.Stop(t, "fast")
	r = c.Check(ctx)
	if r.PostmasterAlive || r.Connectable || !strings.Contains(r.Error, "postmaster") || !strings.Contains(r.Error, "connect") {
		t.Fatalf("stopped server: %v", r)
	}
	if r.PgdataFreeBytes == 0 {
		t.Fatalf("stopped server: the disk checks should still work: %v", r)
	}
	if got := Role(r); got != RoleStopped {
		t.Fatalf("stopped server has role %q", got)
	}

	pg.Start(t)
	deadline := time.Now().Add(30 * time.Second)
	for r = c.Check(ctx); !r.Connectable && time.Now().Before(deadline); r = c.Check(ctx) {
		time.Sleep(100 * time.Millisecond)
	}
	if !r.Connectable || !r.PostmasterAlive || r.Error != "" {
		t.Fatalf("restarted server: %v", r)
	}
}

// TestCheckPartialReport: SELECT 1 answers but the identity query fails
// (here for want of the privilege; under load, a timeout): the report is
// connectable with its recovery state unknown, never "not in recovery", so
// nothing takes the server for a writable primary.
func TestCheckPartialReport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	pg.Exec(t, "CREATE ROLE probe LOGIN")
	pg.Exec(t, "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
	dsn := strings.Replace(pg.DSN(), "user=postgres", "user=probe", 1)
	c := NewChecker(Config{Cluster: "main", Node: "pg-a2", PGData: pg.PGData, DSN: dsn}, nil)
	defer c.Close(context.Background())

	r := c.Check(context.Background())
	if !r.Connectable || !r.RecoveryUnknown || r.InRecovery || !strings.Contains(r.Error, "server identity") {
		t.Fatalf("partial report: connectable %v recovery unknown %v in recovery %v error %q; want connectable, recovery unknown, the identity query named",
			r.Connectable, r.RecoveryUnknown, r.InRecovery, r.Error)
	}
	if got := Role(r); got != RoleUnknown {
		t.Fatalf("partial report has role %q, want %q", got, RoleUnknown)
	}
	for _, e := range []Endpoint{EndpointPrimary, EndpointReplica, EndpointReady} {
		if code := Status(e, r, 1<<20); code != 503 {
			t.Fatalf("%s answers %d on a partial report, want 503", e, code)
		}
	}
}

// TestStalePostmasterPID: a postmaster.pid naming a dead process or an
// unrelated one is not a live server.
func TestStalePostmasterPID(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pg_wal"), 0o700)
	c := NewChecker(Config{PGData: dir, DSN: "host=127.0.0.1 port=1 user=x connect_timeout=2"}, nil)
	for _, pid := range []int{os.Getpid(), 1 << 22} {
		os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(fmt.Sprintf("%d\n%s\n", pid, dir)), 0o600)
		r := c.Check(context.Background())
		if r.PostmasterAlive || !strings.Contains(r.Error, "stale") {
			t.Errorf("pid %d: %v", pid, r)
		}
	}
}

// TestPasswordNotInErrors: a DSN that does not parse is not quoted back.
func TestPasswordNotInErrors(t *testing.T) {
	c := NewChecker(Config{PGData: t.TempDir(), DSN: "host=127.0.0.1 port=notaport password=hunter2"}, nil)
	if r := c.Check(context.Background()); strings.Contains(r.Error, "hunter2") || r.Connectable {
		t.Fatalf("report: %v", r)
	}
}
