package divergence

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// replicaOf makes a streaming replica of p and waits until it replayed
// everything p wrote.
func replicaOf(t *testing.T, p *pgtest.Cluster) *pgtest.Cluster {
	t.Helper()
	r := pgtest.Empty(t, pgtest.Options{})
	r.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(p.Port), "-U", "postgres",
		"-D", r.PGData, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	r.AppendConf(t, r.LocalConf())
	r.Start(t)
	caughtUp(t, p, r)
	return r
}

// caughtUp waits until replica r replayed everything p wrote.
func caughtUp(t *testing.T, p, r *pgtest.Cluster) {
	t.Helper()
	want := p.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	testutil.WaitFor(t, 60*time.Second, "the replica to replay everything", func() (bool, error) {
		got := r.QueryString(t, "SELECT pg_last_wal_replay_lsn()::text")
		return got >= want && len(got) >= len(want), fmt.Errorf("replayed %s of %s", got, want)
	})
}

// TestMakeReplicas: replicas get rejoin orders too. One that was down
// before the fork (its WAL ends before it) makes no report; one that
// received WAL past the fork (ahead of the promoted node) reports it as
// a replica's, not as commits of its own.
func TestMakeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	p := pgtest.New(t, pgtest.Options{Conf: map[string]string{"autovacuum": "off", "wal_log_hints": "on"}})
	p.Start(t)
	p.Exec(t, "CREATE TABLE t (id int)")
	behind, promoted, ahead := replicaOf(t, p), replicaOf(t, p), replicaOf(t, p)
	behind.Stop(t, "fast")
	p.Exec(t, "INSERT INTO t VALUES (1)")
	caughtUp(t, p, promoted)
	caughtUp(t, p, ahead)
	promoted.Stop(t, "fast")
	p.Exec(t, "INSERT INTO t VALUES (2)")
	p.Exec(t, "INSERT INTO t VALUES (3)")
	caughtUp(t, p, ahead)
	ahead.Stop(t, "fast")
	p.Stop(t, "fast")
	promoted.Start(t)
	promoted.Run(t, "pg_ctl", "promote", "-w", "-D", promoted.PGData)
	testutil.WaitFor(t, 60*time.Second, "the promoted node to write on timeline 2", func() (bool, error) {
		f := promoted.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		return f[:8] == "00000002", fmt.Errorf("writing %s", f)
	})

	ctx := context.Background()
	make := func(c *pgtest.Cluster) *Report {
		cfg := testConfig(t, c.PGData)
		return Make(ctx, Input{Cfg: cfg, PG: pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData}),
			Epoch: 3, NewPrimary: "pg-a2", DSN: promoted.DSN()})
	}
	if r := make(behind); r != nil {
		t.Errorf("the replica behind the fork: report %s (%s), want none", r.Status, r.Error)
	}
	r := make(ahead)
	if r == nil || r.Status != StatusReplica || !r.Replica || r.Committed != 2 || r.Error != "" {
		t.Fatalf("the replica ahead of the fork: %+v", r)
	}
	if s := Summary(r); s.GetStatus() != StatusReplica || s.GetCommitted() != 2 {
		t.Errorf("summary: %v", s)
	}
	old := make(p)
	if old == nil || old.Status != StatusKnown || old.Replica || old.Committed != 2 {
		t.Errorf("the old primary: %+v", old)
	}
}

// TestMakeSwitchover: after a clean switchover the old primary's WAL ends
// at the fork: a known report of nothing, with no WAL segment stored;
// the rejoin tried again reuses the stored report (the same id, nothing
// written again).
func TestMakeSwitchover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	p := pgtest.New(t, pgtest.Options{Conf: map[string]string{"autovacuum": "off", "wal_log_hints": "on"}})
	p.Start(t)
	p.Exec(t, "CREATE TABLE t (id int)")
	r := replicaOf(t, p)
	p.Stop(t, "fast")
	testutil.WaitFor(t, 60*time.Second, "the replica to replay the shutdown checkpoint", func() (bool, error) {
		out := p.Run(t, "pg_controldata", "-D", p.PGData)
		ck, _ := controlField(out, "Latest checkpoint location")
		got := r.QueryString(t, "SELECT pg_last_wal_replay_lsn()::text")
		return got > ck && len(got) >= len(ck), fmt.Errorf("replayed %s, shutdown checkpoint at %s", got, ck)
	})
	r.Run(t, "pg_ctl", "promote", "-w", "-D", r.PGData)

	ctx := context.Background()
	cfg := testConfig(t, p.PGData)
	cfg.Agent.StateDir = t.TempDir()
	pg := pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData})
	in := Input{Cfg: cfg, PG: pg, Epoch: 3, NewPrimary: "pg-a2", DSN: r.DSN()}
	first := Make(ctx, in)
	if first == nil || first.Status != StatusKnown || first.Bytes != 0 || first.Committed != 0 || len(first.Segments) != 0 || !first.Stored {
		t.Fatalf("the switchover's report: %+v", first)
	}
	objects := func() int {
		n := 0
		filepath.WalkDir(strings.TrimPrefix(cfg.Repos[0].URL, "file://"), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
	before := objects()
	in.Now = func() time.Time { return time.Now().Add(time.Minute) }
	again := Make(ctx, in)
	if again == nil || again.ID != first.ID || !again.Stored || objects() != before {
		t.Errorf("the rejoin tried again: report %+v (first %s), %d objects (were %d)", again, first.ID, objects(), before)
	}
}
