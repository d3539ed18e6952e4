package pgctl

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestControllerStartStop: on a real server, Start leaves it accepting
// connections as a primary, its programs run as the data directory's
// owner, and Stop stops it; stopping a stopped server is not an error.
func TestControllerStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	pg := pgtest.New(t, pgtest.Options{})
	c := New(Config{BinDir: pg.BinDir, PGData: pg.PGData, DSN: pg.DSN()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if c.Running() {
		t.Fatal("running before Start")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v\n%s", err, readLog(c))
	}
	if !c.Running() {
		t.Fatal("not running after Start")
	}
	conn, inRecovery, err := c.ConnRecovery(ctx)
	if err != nil {
		t.Fatalf("ConnRecovery: %v", err)
	}
	conn.Close(ctx)
	if inRecovery {
		t.Fatal("a fresh cluster reports recovery")
	}
	out, err := c.Run(ctx, "pg_controldata", "-D", pg.PGData)
	if err != nil || !strings.Contains(out, "in production") {
		t.Fatalf("pg_controldata of a running server: %v\n%s", err, out)
	}

	f := filepath.Join(pg.PGData, "pgdr-owned-test")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.ChownLikePGData(f)
	got, err := fsutil.OwnerOf(f)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := fsutil.OwnerOf(pg.PGData); got != want && os.Geteuid() == 0 {
		t.Fatalf("ChownLikePGData: owner %+v, want the data directory's %+v", got, want)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if c.Running() {
		t.Fatal("running after Stop")
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop of a stopped server: %v", err)
	}
	out, err = c.Run(ctx, "pg_controldata", "-D", pg.PGData)
	if err != nil || !strings.Contains(out, "shut down") {
		t.Fatalf("pg_controldata after a fast shutdown: %v\n%s", err, out)
	}
}

func readLog(c *Controller) string {
	b, _ := os.ReadFile(c.LogFile())
	return string(b)
}
