package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/pgpage"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	"github.com/pgdr/pgdr/pkg/wal"
)

// newStandby builds a streaming standby of the lab's primary with
// pg_basebackup -R, starts it (with conf added) and waits until it streams.
func (l *lab) newStandby(t *testing.T, conf map[string]string) *pgtest.Cluster {
	t.Helper()
	sb := pgtest.Empty(t, pgtest.Options{})
	sb.Run(t, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(l.pg.Port), "-U", "postgres",
		"-D", sb.PGData, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	sb.AppendConf(t, sb.LocalConf())
	if conf != nil {
		sb.AppendConf(t, conf)
	}
	sb.Start(t)
	testutil.WaitFor(t, 60*time.Second, "the standby to stream from the primary", func() (bool, error) {
		st := l.pg.QueryString(t, "SELECT coalesce(string_agg(state, ','), '') FROM pg_stat_replication")
		return st == "streaming", fmt.Errorf("pg_stat_replication states %q; standby log:\n%s", st, tail(sb.Log(), 1500))
	})
	return sb
}

// writeNodeConfig writes an agent configuration for another server of the
// lab's cluster (a standby): the lab's repositories and identity, that
// server's data directory and DSN.
func (l *lab) writeNodeConfig(t *testing.T, name string, node *pgtest.Cluster, repos []string) string {
	t.Helper()
	p := l.writeConfig(t, name, repos, l.identity, 0)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, repl := range map[string]string{
		"pgdata: " + l.pg.PGData + "\n":    "pgdata: " + node.PGData + "\n",
		fmt.Sprintf("dsn: %q", l.pg.DSN()): fmt.Sprintf("dsn: %q", node.DSN()),
		"name: pg-a1,":                     "name: pg-a2,",
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("the lab's configuration has no %q:\n%s", old, s)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBackupFromStandby: a backup taken on a streaming standby
// (--from-standby, --primary-dsn to close the last segment) is recorded as
// such and restores, with WAL archived by the primary, to a time target
// with exactly the rows committed up to it. Without --from-standby the
// backup of a standby is refused, and --from-standby on a primary too.
func TestBackupFromStandby(t *testing.T) {
	skipShort(t)
	l := newLab(t, labOpts{})
	l.pg.Exec(t, "CREATE TABLE batches(batch int, n int)")
	insertBatch(t, l, 1)
	sb := l.newStandby(t, nil)
	sbcfg := l.writeNodeConfig(t, "standby.yaml", sb, []string{"file"})
	insertBatch(t, l, 2)
	testutil.WaitFor(t, 60*time.Second, "the standby to replay batch 2", func() (bool, error) {
		got := batchesIn(t, sb)
		return got == "1,2", fmt.Errorf("standby has batches %q", got)
	})

	r := runAgentPG(t, "backup", "--config", sbcfg, "--json")
	if r.code == 0 || !strings.Contains(r.stderr, "standby") || !strings.Contains(r.stderr, "--from-standby") {
		t.Fatalf("backup of a standby without --from-standby: exit %d, want a refusal naming --from-standby\n%s", r.code, r.stderr)
	}
	r = runAgentPG(t, "backup", "--config", l.cfg, "--json", "--from-standby")
	if r.code == 0 || !strings.Contains(r.stderr, "not in recovery") {
		t.Fatalf("backup --from-standby of a primary: exit %d, want a refusal\n%s", r.code, r.stderr)
	}
	if bs := listBackups(t, l.cfg, ""); len(bs) != 0 {
		t.Fatalf("refused backups were recorded: %+v", bs)
	}

	id := l.backup(t, sbcfg, "--from-standby", "--primary-dsn", l.pg.DSN())
	b := findBackup(t, listBackups(t, l.cfg, "local"), id)
	if !b.FromStandby || b.Type != "full" {
		t.Fatalf("standby backup %s listed as %+v, want a full backup from a standby", id, b)
	}
	if m := loadManifest(t, sbcfg, id); m.Node != "pg-a2" {
		t.Fatalf("standby backup %s records node %q, want pg-a2", id, m.Node)
	}
	if r := runAgent(t, nil, "backup-verify", "--config", l.cfg, id); r.code != 0 {
		t.Fatalf("backup-verify %s: exit %d\n%s\n%s", id, r.code, r.stdout, r.stderr)
	}

	t3 := insertBatch(t, l, 3)
	insertBatch(t, l, 4)
	last := l.switchWAL(t)
	l.waitArchived(t, last, 2*time.Minute)
	sb.Stop(t, "fast")

	c, out := l.restoreJSON(t, l.cfg, "--backup", id, "--target-time", t3, "--target-action", "promote")
	if out.Restore.Backup != id {
		t.Fatalf("restored %s, want %s", out.Restore.Backup, id)
	}
	if got := batchesIn(t, c); got != "1,2,3" {
		t.Fatalf("standby backup restored to %s: batches %s, want 1,2,3", t3, got)
	}
	if n := c.QueryString(t, "SELECT count(*)::text FROM batches"); n != "300" {
		t.Fatalf("standby backup restored to %s: %s rows, want 300", t3, n)
	}
	c.Stop(t, "fast")
}

// pageLSNsAbove counts the pages of relation files under pgdata whose LSN
// is above lsn, and returns the first few.
func pageLSNsAbove(t *testing.T, pgdata string, lsn wal.LSN) (int, []string) {
	t.Helper()
	n := 0
	var first []string
	err := filepath.WalkDir(pgdata, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(pgdata, p)
		if _, ok := pgpage.ParseRelPath(filepath.ToSlash(rel)); !ok {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for off := 0; off+pgpage.BlockSize <= len(b); off += pgpage.BlockSize {
			if l := wal.LSN(pgpage.ParseHeader(b[off:]).LSN); l > lsn {
				n++
				if len(first) < 5 {
					first = append(first, fmt.Sprintf("%s block %d at %s", rel, off/pgpage.BlockSize, l))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, first
}

// controlMinRecoveryPoint reads "Minimum recovery ending location" from a
// data directory's pg_control.
func controlMinRecoveryPoint(t *testing.T, c *pgtest.Cluster) wal.LSN {
	t.Helper()
	out := c.Run(t, "pg_controldata", "-D", c.PGData)
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Minimum recovery ending location:"); ok {
			lsn, err := wal.ParseLSN(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return lsn
		}
	}
	t.Fatalf("pg_controldata prints no minimum recovery ending location:\n%s", out)
	return 0
}

// standbyWrites is a standby backup taken while the standby replays writes.
type standbyWrites struct {
	l         *lab
	id        string
	end       string // the primary's WAL position once the writes stopped
	srcSums   map[string]string
	srcDump   string
	hotTables int
}

// backupStandbyUnderWrites builds a standby with a tiny shared_buffers (so
// it writes pages out all along while it replays) and takes a backup of it
// while, on the primary, pgbench runs and another pgbench inserts into
// small tables (one insert in each per transaction, so they always hold
// the same number of rows), which keep growing while they are copied.
func backupStandbyUnderWrites(t *testing.T) *standbyWrites {
	t.Helper()
	s := &standbyWrites{l: newLab(t, labOpts{}), hotTables: 20}
	l := s.l
	l.pg.PGBench(t, "-i", "-q", "-s", "5", "postgres")
	var fn strings.Builder
	fn.WriteString("CREATE FUNCTION hot_insert() RETURNS void LANGUAGE plpgsql AS $$ BEGIN\n")
	for i := range s.hotTables {
		l.pg.Exec(t, fmt.Sprintf("CREATE TABLE hot%d(i int, pad text); INSERT INTO hot%d VALUES (0, '')", i, i))
		fmt.Fprintf(&fn, "INSERT INTO hot%d VALUES (1, repeat('x', 100));\n", i)
	}
	fn.WriteString("END $$")
	l.pg.Exec(t, fn.String())
	script := filepath.Join(l.dir, "hot-insert.sql")
	if err := os.WriteFile(script, []byte("SELECT hot_insert();\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, script)
	sb := l.newStandby(t, map[string]string{"shared_buffers": "'1MB'"})
	sbcfg := l.writeNodeConfig(t, "standby.yaml", sb, []string{"file"})

	bench := startPgbench(t, l.pg, "-c", "2")
	hot := startPgbench(t, l.pg, "-c", "1", "-f", script)
	s.id = l.backup(t, sbcfg, "--from-standby", "--primary-dsn", l.pg.DSN())
	if !bench.running() || !hot.running() {
		t.Fatalf("pgbench ended during the standby backup:\n%s\n%s", bench.out.String(), hot.out.String())
	}
	hot.cmd.Process.Signal(os.Interrupt)
	bench.stop(t)
	hot.stop(t)
	s.end = l.pg.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	s.srcSums, s.srcDump = pgbenchSums(t, l.pg), pgDump(t, l.pg)
	seg := l.pg.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	l.waitArchived(t, seg, 2*time.Minute)
	sb.Stop(t, "fast")
	return s
}

// hotCounts returns the row counts of the hot tables, space-separated.
func (s *standbyWrites) hotCounts(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	var q []string
	for i := range s.hotTables {
		q = append(q, fmt.Sprintf("(SELECT count(*) FROM hot%d)", i))
	}
	return c.QueryString(t, "SELECT "+strings.Join(q, " || ' ' || "))
}

// TestBackupFromStandbyUnderWrites: a standby backup taken while the
// standby replays pgbench's writes, restored to the end of the writes,
// holds the same data as the source (checksums, pg_dump).
func TestBackupFromStandbyUnderWrites(t *testing.T) {
	skipShort(t)
	s := backupStandbyUnderWrites(t)
	c, out := s.l.restoreJSON(t, s.l.cfg, "--backup", s.id, "--target-lsn", s.end, "--target-action", "promote")
	t.Logf("standby backup %s restored to %s: %+v", s.id, s.end, out.Reached)
	sameData(t, "standby backup "+s.id+" restored to "+s.end, pgbenchSums(t, c), pgDump(t, c), s.srcSums, s.srcDump)
	c.Stop(t, "fast")
}

// TestBackupFromStandbyConsistencyPoint: PostgreSQL ends recovery of a
// backup taken from a standby at the minRecoveryPoint of the pg_control
// copied into the backup (xlogrecovery.c: backupEndPoint =
// ControlFile->minRecoveryPoint), so no page in the backup may carry a
// later LSN: pg_basebackup copies pg_control last for this reason. Restored
// to its consistency point (--target-immediate) and promoted, the backup
// must be consistent: the hot tables hold equal counts, and they stay so
// after 20000 new transactions (which would reuse the XIDs of rows from
// "the future" left on such pages and make them appear), and every page
// can be written back (a page LSN beyond the WAL fails with "xlog flush
// request ... is not satisfied").
func TestBackupFromStandbyConsistencyPoint(t *testing.T) {
	skipShort(t)
	s := backupStandbyUnderWrites(t)
	l := s.l
	m := loadManifest(t, l.cfg, s.id)

	// The files as restore writes them, before any recovery.
	c := pgtest.Empty(t, pgtest.Options{})
	r := runAgent(t, nil, "restore", "--config", l.cfg, "--pgdata", c.PGData, "--backup", s.id, "--target-immediate", "--json")
	if r.code != 0 {
		t.Fatalf("restore of %s: exit %d\n%s\n%s", s.id, r.code, r.stdout, tail(r.stderr, 3000))
	}
	minRecovery := controlMinRecoveryPoint(t, c)
	n, first := pageLSNsAbove(t, c.PGData, minRecovery)
	t.Logf("standby backup %s: start %s, stop %s; its pg_control's minimum recovery point %s; %d pages above it", s.id, m.StartLSN, m.StopLSN, minRecovery, n)
	if n > 0 {
		t.Errorf("standby backup %s holds %d pages with an LSN above the minimum recovery point of its pg_control (%s), where recovery declares it consistent: e.g. %v", s.id, n, minRecovery, first)
	}

	c, out := l.restoreJSON(t, l.cfg, "--backup", s.id, "--target-immediate", "--target-action", "promote")
	t.Logf("restored to the consistency point: %+v", out.Reached)
	invariants := func(when string) string {
		counts := s.hotCounts(t, c)
		f := strings.Fields(counts)
		for _, v := range f {
			if v != f[0] {
				t.Fatalf("%s: the hot tables hold %s rows, want equal counts", when, counts)
			}
		}
		sums := c.QueryString(t, `SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT sum(bbalance) FROM pgbench_branches) || ' ' ||
			(SELECT sum(tbalance) FROM pgbench_tellers) || ' ' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)`)
		if g := strings.Fields(sums); len(g) != 4 || g[0] != g[1] || g[1] != g[2] || g[2] != g[3] {
			t.Fatalf("%s: balances (accounts, branches, tellers, history) %s, want all equal", when, sums)
		}
		return counts + " / " + sums
	}
	before := invariants("at the consistency point")
	c.Exec(t, "DO $$ BEGIN FOR i IN 1..20000 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$")
	if after := invariants("after 20000 more transactions"); after != before {
		t.Fatalf("rows changed without any write to them: %s, then %s", before, after)
	}
	c.Exec(t, "CHECKPOINT")
	c.Stop(t, "fast")
}
