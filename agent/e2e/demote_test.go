package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestDemoteRestart: a demote order stops the primary cleanly and reports
// its shutdown checkpoint; a restart order (what an aborted switchover
// sends) starts it again as the primary; a fenced node is never restarted.
func TestDemoteRestart(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{checksums: true})
	l.pg.Exec(t, "CREATE TABLE lease_probe(t timestamptz); CREATE TABLE rows(n int)")
	f := startFakeLeader(t, filepath.Join(l.dir, "coord"))
	f.set("pg-a1", 1)
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := l.writeConfig(t, "demote.yaml", []string{"file"}, l.identity, 0)
	appendFile(t, cfg, f.configLines(addr))
	startDaemon(t, l, cfg)
	waitProbes(t, 30*time.Second, addr, 200, "/primary")

	res := f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 1, Kind: &pgdrv1.AgentCommand_Demote{Demote: &pgdrv1.Demote{Reason: "test"}}}, 60*time.Second)
	if !res.Ok || !strings.Contains(res.Output, "shutdown_checkpoint_lsn=") {
		t.Fatalf("demote: ok=%v output=%q error=%q", res.Ok, res.Output, res.Error)
	}
	if answers(l.pg) {
		t.Fatal("PostgreSQL still answers after the demote")
	}

	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 1, Kind: &pgdrv1.AgentCommand_Restart{Restart: &pgdrv1.Restart{Reason: "switchover aborted"}}}, 120*time.Second)
	if !res.Ok || !strings.Contains(res.Output, "restarted") {
		t.Fatalf("restart: ok=%v output=%q error=%q", res.Ok, res.Output, res.Error)
	}
	l.pg.Exec(t, "INSERT INTO rows VALUES (1)")
	waitProbes(t, 30*time.Second, addr, 200, "/primary")

	// A second restart of a running server changes nothing.
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 1, Kind: &pgdrv1.AgentCommand_Restart{Restart: &pgdrv1.Restart{}}}, 60*time.Second)
	if !res.Ok || !strings.Contains(res.Output, "already running") {
		t.Fatalf("restart of a running server: ok=%v output=%q error=%q", res.Ok, res.Output, res.Error)
	}

	// Fenced: never restarted.
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 1, Kind: &pgdrv1.AgentCommand_Fence{Fence: &pgdrv1.Fence{Reason: "test"}}}, 60*time.Second)
	if !res.Ok {
		t.Fatalf("fence: %q", res.Error)
	}
	res = f.order(t, "pg-a1", &pgdrv1.AgentCommand{Epoch: 1, Kind: &pgdrv1.AgentCommand_Restart{Restart: &pgdrv1.Restart{}}}, 60*time.Second)
	if res.Ok || !strings.Contains(res.Error, "fenced") {
		t.Fatalf("restart of a fenced node: ok=%v output=%q error=%q", res.Ok, res.Output, res.Error)
	}
	if answers(l.pg) {
		t.Fatal("a fenced node answers after a refused restart")
	}
}

// answers reports whether the server accepts a connection now.
func answers(c *pgtest.Cluster) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}
