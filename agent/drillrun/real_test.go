package drillrun

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

var agentBin testutil.Builder

// TestRunnerOnRealPostgreSQL: a PostgreSQL 15 primary archiving with
// pgdr-agent wal-push, one full backup of tier daily; Drill orders carried
// out by a Runner with the agent's Driller: one passes (amcheck, a SQL
// check, timings), one to the backup's end + 1 s does not show the rows
// committed later, one with a wrong expectation fails naming the check,
// one with a scratch path inside the production data directory is refused
// before it starts (not_started) and leaves PGDATA as it was.
func TestRunnerOnRealPostgreSQL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	bin := agentBin.Build(t, "./agent/cmd/pgdr-agent", "pgdr-agent")
	dir := pgtest.OwnedDir(t, "pgdr-drillrun-")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := pgtest.New(t, pgtest.Options{InitdbArgs: []string{"--data-checksums"}})
	cfgPath := filepath.Join(dir, "agent.yaml")
	yaml := fmt.Sprintf("cluster: main\nnode: {name: pg-a1, region: local}\npostgres:\n  pgdata: %s\n  dsn: %q\nrepos:\n  - name: local\n    url: file://%s\n"+
		"compression: {method: zstd, level: 3}\nencryption:\n  recipients: [%q]\n  identity_file: %s\nagent:\n  socket: %s\n",
		pg.PGData, pg.DSN(), filepath.Join(dir, "repo"), id.Recipient().String(), idFile, filepath.Join(dir, "agent.sock"))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	pg.AppendConf(t, map[string]string{"archive_mode": "on",
		"archive_command": fmt.Sprintf("'%s wal-push --config %s %%p'", bin, cfgPath)})
	pgtest.Chown(t, dir)
	pg.Start(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pg.Exec(t, "CREATE TABLE drill_t AS SELECT g AS id FROM generate_series(1, 500) g")
	rec, err := keys.Recipients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.Take(ctx, backup.Deps{Cfg: cfg, Repos: repos, Recipients: rec, Log: log}, backup.Options{Type: backup.TypeFull, Tier: "daily"})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	// 100 more rows committed after the backup's end + 1 s: a drill to
	// that target must not show them, one to the end of the archive must.
	testutil.WaitFor(t, 10*time.Second, "a second past the backup's end", func() (bool, error) {
		return time.Now().After(m.StopTime.Add(1500 * time.Millisecond)), nil
	})
	pg.Exec(t, "INSERT INTO drill_t SELECT g FROM generate_series(501, 600) g")
	seg := pg.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	testutil.WaitFor(t, 60*time.Second, "segment "+seg+" archived", func() (bool, error) {
		return pg.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg, nil
	})

	comp := newCompletions()
	r := New(Deps{Cluster: "main", Node: "pg-a1", Run: Driller(cfg, repos, log, bin), Completer: comp, Log: log})
	drillOrder := func(id, expect, scratch string) *pgdrv1.AgentCommand {
		return &pgdrv1.AgentCommand{Id: id, Cluster: "main", Node: "pg-a1", Kind: &pgdrv1.AgentCommand_Drill{Drill: &pgdrv1.Drill{
			RunId: id, Tier: "daily", TimeoutMs: (3 * time.Minute).Milliseconds(), Scratch: scratch,
			Checks: []*pgdrv1.DrillCheck{{Name: "rows", Database: "postgres", Sql: "SELECT count(*) FROM drill_t", Expect: expect}}}}}
	}
	if res := r.StartAt(ctx, drillOrder("pass", "600", ""), time.Now()); !res.GetPending() {
		t.Fatalf("answer %v", res)
	}
	got := comp.wait(t)
	rep := got.GetDrill()
	t.Logf("passed: %v", got)
	if !got.GetOk() || !rep.GetOk() || !rep.GetAmcheckRun() || !rep.GetAmcheckOk() || rep.GetChecksPassed() != 1 || rep.GetChecksFailed() != 0 ||
		rep.GetTimings().GetFetchWrite() <= 0 || rep.GetTimings().GetReplay() <= 0 || rep.GetTimings().GetTotal() <= 0 || rep.GetBackup() == "" {
		t.Fatalf("passing drill: %v", got)
	}

	// Backup end + 1 s: the tier's newest backup, recovered to just after
	// its end: the later rows are not there.
	after := drillOrder("after", "500", "")
	after.GetDrill().TargetAfterBackupMs = 1000
	r.StartAt(ctx, after, time.Now())
	got = comp.wait(t)
	t.Logf("backup end + 1s: %v", got)
	if !got.GetOk() || got.GetDrill().GetTarget() == "latest" || got.GetDrill().GetBackup() != rep.GetBackup() {
		t.Fatalf("drill to backup end + 1s: %v", got)
	}

	r.StartAt(ctx, drillOrder("fail", "599", ""), time.Now())
	got = comp.wait(t)
	t.Logf("failed: %v", got)
	if got.GetOk() || got.GetDrill().GetChecksFailed() != 1 || !strings.Contains(got.GetDrill().GetReason(), "rows") || got.GetDrill().GetNotStarted() {
		t.Fatalf("failing drill: %v", got)
	}

	before, _ := os.ReadDir(pg.PGData)
	r.StartAt(ctx, drillOrder("inside", "600", filepath.Join(pg.PGData, "drill-scratch")), time.Now())
	got = comp.wait(t)
	if got.GetOk() || !got.GetDrill().GetNotStarted() || !strings.Contains(got.GetError(), "scratch") {
		t.Fatalf("scratch inside PGDATA: %v", got)
	}
	if after, _ := os.ReadDir(pg.PGData); len(after) != len(before) {
		t.Fatalf("PGDATA had %d entries, now %d", len(before), len(after))
	}
	r.Wait()
}
