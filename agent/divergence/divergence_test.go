package divergence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// wantTx is a transaction the test committed on the old primary: its xid
// and rows changed per table.
type wantTx struct {
	xid  uint32
	rows map[string][3]uint64 // table → inserts, updates, deletes
}

// diverged is a primary that went on writing after a replica of it was
// promoted: the old primary (stopped), the new one, the fork and what
// the old one committed past it.
type diverged struct {
	old, new *pgtest.Cluster
	want     []wantTx
	aborted  uint32 // the xid of a transaction rolled back past the fork
}

// newDiverged makes a primary and a streaming replica with tables t_a
// and t_b, promotes the replica, then commits known transactions on the
// old primary (inserts, updates, deletes, a COPY, one with a rolled-back
// savepoint), rolls one back, and stops it (fast).
func newDiverged(t *testing.T) *diverged {
	t.Helper()
	conf := map[string]string{"autovacuum": "off", "wal_log_hints": "on"}
	p := pgtest.New(t, pgtest.Options{Conf: conf})
	p.Start(t)
	p.Exec(t, "CREATE TABLE t_a (id int PRIMARY KEY, v text)")
	p.Exec(t, "CREATE TABLE t_b (id int, v text)")
	p.Exec(t, "INSERT INTO t_a SELECT g, 'old' FROM generate_series(1, 10) g")
	p.Exec(t, "INSERT INTO t_b SELECT g, 'old' FROM generate_series(1, 10) g")
	p.Exec(t, "CREATE TABLE t_p (id int, k int) PARTITION BY LIST (k)")
	p.Exec(t, "CREATE TABLE t_p1 PARTITION OF t_p FOR VALUES IN (1)")
	p.Exec(t, "CREATE TABLE t_p2 PARTITION OF t_p FOR VALUES IN (2)")
	p.Exec(t, "INSERT INTO t_p SELECT g, 1 FROM generate_series(1, 5) g")
	r := pgtest.Empty(t, pgtest.Options{})
	r.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(p.Port), "-U", "postgres",
		"-D", r.PGData, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	r.AppendConf(t, r.LocalConf())
	r.Start(t)
	testutil.WaitFor(t, 60*time.Second, "the replica to replay everything", func() (bool, error) {
		want := p.QueryString(t, "SELECT pg_current_wal_lsn()::text")
		got := r.QueryString(t, "SELECT pg_last_wal_replay_lsn()::text")
		return got == want, fmt.Errorf("replayed %s of %s", got, want)
	})
	r.Run(t, "pg_ctl", "promote", "-w", "-D", r.PGData)

	ctx := context.Background()
	conn := p.Conn(t)
	defer conn.Close(ctx)
	d := &diverged{old: p, new: r}
	tx := func(rows map[string][3]uint64, stmts ...string) {
		t.Helper()
		x, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var xid string
		if err := x.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid); err != nil {
			t.Fatal(err)
		}
		for _, s := range stmts {
			if _, err := x.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if err := x.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseUint(xid, 10, 32)
		d.want = append(d.want, wantTx{xid: uint32(n), rows: rows})
	}
	tx(map[string][3]uint64{"public.t_a": {3, 0, 0}}, "INSERT INTO t_a VALUES (101, 'new'), (102, 'new'), (103, 'new')")
	tx(map[string][3]uint64{"public.t_a": {0, 2, 0}}, "UPDATE t_a SET v = 'changed' WHERE id <= 2")
	tx(map[string][3]uint64{"public.t_b": {0, 0, 1}, "public.t_a": {0, 0, 1}}, "DELETE FROM t_b WHERE id = 1", "DELETE FROM t_a WHERE id = 3")
	tx(map[string][3]uint64{"public.t_a": {1, 0, 0}, "public.t_b": {1, 0, 0}},
		"INSERT INTO t_a VALUES (201, 'sp')", "SAVEPOINT s1", "INSERT INTO t_b VALUES (202, 'rolled back')",
		"ROLLBACK TO SAVEPOINT s1", "SAVEPOINT s2", "INSERT INTO t_b VALUES (203, 'kept')", "RELEASE SAVEPOINT s2")
	// A row moving partitions is a delete (XLH_DELETE_IS_PARTITION_MOVE)
	// in one and an insert in the other.
	tx(map[string][3]uint64{"public.t_p1": {0, 0, 1}, "public.t_p2": {1, 0, 0}}, "UPDATE t_p SET k = 2 WHERE id = 1")
	// ON CONFLICT DO NOTHING: only the row that did not conflict.
	tx(map[string][3]uint64{"public.t_a": {1, 0, 0}}, "INSERT INTO t_a VALUES (1, 'conflicts'), (401, 'new') ON CONFLICT DO NOTHING")
	// COPY writes one multi-insert record for its rows.
	x, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var xid string
	x.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid)
	var src [][]any
	for i := range 25 {
		src = append(src, []any{int32(300 + i), "copied"})
	}
	if _, err := x.CopyFrom(ctx, pgx.Identifier{"t_b"}, []string{"id", "v"}, pgx.CopyFromRows(src)); err != nil {
		t.Fatal(err)
	}
	if err := x.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseUint(xid, 10, 32)
	d.want = append(d.want, wantTx{xid: uint32(n), rows: map[string][3]uint64{"public.t_b": {25, 0, 0}}})
	// Rolled back: not listed.
	x, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid)
	if _, err := x.Exec(ctx, "INSERT INTO t_a VALUES (999, 'aborted')"); err != nil {
		t.Fatal(err)
	}
	if err := x.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	n, _ = strconv.ParseUint(xid, 10, 32)
	d.aborted = uint32(n)
	conn.Close(ctx)
	p.Stop(t, "fast")
	return d
}

// testConfig is an agent configuration for the old primary with one
// encrypted file repository.
func testConfig(t *testing.T, pgdata string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	id := filepath.Join(dir, "identity.txt")
	rcpt, err := objstream.GenerateIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Cluster: "main", Node: config.Node{Name: "pg-a1"}}
	cfg.Postgres = config.Postgres{PGData: pgdata, BinDir: pgtest.DefaultBinDir}
	cfg.Repos = []config.Repo{{Name: "local", URL: "file://" + filepath.Join(dir, "repo")}}
	cfg.Encryption = config.Encryption{Recipients: []string{rcpt}, IdentityFile: id}
	return cfg
}

// checkTransactions compares a report's transactions with what the test
// committed: the same xids in commit order, the same rows per table.
func checkTransactions(t *testing.T, got []Transaction, want []wantTx, aborted uint32) {
	t.Helper()
	var gx, wx []uint32
	for _, tx := range got {
		gx = append(gx, tx.XID)
	}
	for _, w := range want {
		wx = append(wx, w.xid)
	}
	if !slices.Equal(gx, wx) {
		t.Fatalf("committed transactions %v, want %v", gx, wx)
	}
	for i, tx := range got {
		if tx.XID == aborted {
			t.Errorf("the rolled-back transaction %d is listed", aborted)
		}
		if tx.CommitTime.IsZero() || time.Since(tx.CommitTime) > time.Hour || tx.LSN == "" {
			t.Errorf("xid %d: commit time %s, lsn %q", tx.XID, tx.CommitTime, tx.LSN)
		}
		rows := map[string][3]uint64{}
		for _, r := range tx.Relations {
			if r.Name == "" || r.OID == 0 || r.DatabaseName != "postgres" || r.RelFileNode == 0 {
				t.Errorf("xid %d: relation not resolved: %+v", tx.XID, r)
			}
			if strings.HasPrefix(r.Name, "public.") {
				rows[r.Name] = [3]uint64{r.Inserts, r.Updates, r.Deletes}
			}
		}
		if fmt.Sprint(rows) != fmt.Sprint(want[i].rows) {
			t.Errorf("xid %d: rows %v, want %v", tx.XID, rows, want[i].rows)
		}
	}
}

// TestMakeReportsDivergedTransactions: a primary that went on committing
// after its replica was promoted; its report (made as the rejoin makes it:
// the fork point from the new primary's history, the names from its
// catalogs) lists exactly the transactions it committed past the fork,
// with their rows per table, not the one rolled back; it is stored in the
// repository with the raw WAL and reads back the same.
func TestMakeReportsDivergedTransactions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	d := newDiverged(t)
	cfg := testConfig(t, d.old.PGData)
	pg := pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData})
	ctx := context.Background()
	r := Make(ctx, Input{Cfg: cfg, PG: pg, Epoch: 7, NewPrimary: "pg-a2", DSN: d.new.DSN()})
	if r.Status != StatusKnown || r.Error != "" {
		t.Fatalf("report status %s: %s", r.Status, r.Error)
	}
	if r.Timeline != 1 || r.NewTimeline != 2 || r.Fork == "" || r.End == "" || r.Bytes == 0 {
		t.Errorf("range: timeline %d → %d, %s..%s, %d bytes", r.Timeline, r.NewTimeline, r.Fork, r.End, r.Bytes)
	}
	if r.Committed != len(d.want) || r.Aborted < 1 || r.NameError != "" {
		t.Errorf("committed %d (want %d), aborted %d, name error %q", r.Committed, len(d.want), r.Aborted, r.NameError)
	}
	checkTransactions(t, r.Transactions, d.want, d.aborted)
	if !r.Stored || r.StoreError != "" || len(r.Segments) == 0 {
		t.Fatalf("stored %v (%s), segments %v", r.Stored, r.StoreError, r.Segments)
	}
	back, err := Load(ctx, cfg, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkTransactions(t, back.Transactions, d.want, d.aborted)
	if back.Fork != r.Fork || back.End != r.End || back.Bytes != r.Bytes {
		t.Errorf("read back: %s..%s %d, want %s..%s %d", back.Fork, back.End, back.Bytes, r.Fork, r.End, r.Bytes)
	}
	s := Summary(r)
	if s.GetId() != r.ID || s.GetCommitted() != uint64(len(d.want)) || len(s.GetTransactions()) != len(d.want) || s.GetStatus() != StatusKnown {
		t.Errorf("summary: %v", s)
	}
	// A node on the new primary's timeline already (a rejoin tried again
	// after pg_rewind): no report.
	d.new.Exec(t, "CHECKPOINT")
	same := testConfig(t, d.new.PGData)
	if r := Make(ctx, Input{Cfg: same, PG: pgctl.New(pgctl.Config{BinDir: same.Postgres.BinDir, PGData: same.Postgres.PGData}), DSN: d.new.DSN()}); r != nil {
		t.Errorf("a node on the new timeline: report %s %s", r.Status, r.Error)
	}
	// A bad id and an unknown one.
	if _, err := Load(ctx, cfg, "../../etc"); !errors.Is(err, ErrBadID) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := Load(ctx, cfg, NewID("pg-a9", time.Now())); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}

// TestMakeUnknownWithoutDataDirectory: a former primary whose data
// directory is gone is reported unknown with the error, never as zero
// transactions; so is one whose WAL at the fork point is missing.
func TestMakeUnknownWithoutDataDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	d := newDiverged(t)
	ctx := context.Background()

	cfg := testConfig(t, d.old.PGData)
	pg := pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData})
	// WAL missing: the segments of pg_wal moved away.
	walDir := filepath.Join(d.old.PGData, "pg_wal")
	ents, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	aside := t.TempDir()
	for _, e := range ents {
		if len(e.Name()) == 24 {
			if err := os.Rename(filepath.Join(walDir, e.Name()), filepath.Join(aside, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := Make(ctx, Input{Cfg: cfg, PG: pg, Epoch: 7, NewPrimary: "pg-a2", DSN: d.new.DSN()})
	if r.Status != StatusUnknown || !strings.Contains(r.Error, "cannot be read") || len(r.Transactions) != 0 {
		t.Errorf("WAL missing: status %s, error %q, %d transactions", r.Status, r.Error, len(r.Transactions))
	}
	if !r.Stored {
		t.Errorf("the unknown report was not stored: %s", r.StoreError)
	}

	// Data directory gone.
	if err := os.RemoveAll(d.old.PGData); err != nil {
		t.Fatal(err)
	}
	r = Make(ctx, Input{Cfg: cfg, PG: pg, Epoch: 7, NewPrimary: "pg-a2", DSN: d.new.DSN()})
	if r.Status != StatusUnknown || r.Error == "" || r.Committed != 0 || len(r.Transactions) != 0 {
		t.Errorf("data directory gone: status %s, error %q", r.Status, r.Error)
	}
	back, err := Load(ctx, cfg, r.ID)
	if err == nil && back.Status != StatusUnknown {
		t.Errorf("stored as %s", back.Status)
	}
	if s := Summary(r); s.GetStatus() != StatusUnknown || s.GetError() == "" {
		t.Errorf("summary: %v", s)
	}
}
