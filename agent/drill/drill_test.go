package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
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
)

var agentBin testutil.Builder

// lab is a PostgreSQL 15 primary archiving with pgdr-agent wal-push into
// a file repository, one full backup of it, and the agent's configuration.
type lab struct {
	pg      *pgtest.Cluster
	dir     string
	repoDir string
	bin     string
	cfg     *config.Config
	repos   []repo.Repo
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	l := &lab{bin: agentBin.Build(t, "./agent/cmd/pgdr-agent", "pgdr-agent"), dir: pgtest.OwnedDir(t, "pgdr-drill-lab-")}
	l.repoDir = filepath.Join(l.dir, "repo")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(l.dir, "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.pg = pgtest.New(t, pgtest.Options{InitdbArgs: []string{"--data-checksums"}})
	cfgPath := filepath.Join(l.dir, "agent.yaml")
	yaml := fmt.Sprintf("cluster: main\nnode: {name: pg-a1, region: local}\npostgres:\n  pgdata: %s\n  dsn: %q\nrepos:\n  - name: local\n    url: file://%s\n"+
		"compression: {method: zstd, level: 3}\nencryption:\n  recipients: [%q]\n  identity_file: %s\nagent:\n  socket: %s\n",
		l.pg.PGData, l.pg.DSN(), l.repoDir, id.Recipient().String(), idFile, filepath.Join(l.dir, "agent.sock"))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	l.pg.AppendConf(t, map[string]string{
		"archive_mode":    "on",
		"archive_command": fmt.Sprintf("'%s wal-push --config %s %%p'", l.bin, cfgPath),
	})
	pgtest.Chown(t, l.dir)
	l.pg.Start(t)
	if l.cfg, err = config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.repos, err = repo.OpenAll(ctx, l.cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// backup takes a full backup of tier daily.
func (l *lab) backup(t *testing.T) *backup.Manifest {
	t.Helper()
	rec, err := keys.Recipients(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := backup.Take(ctx, backup.Deps{Cfg: l.cfg, Repos: l.repos, Recipients: rec, Log: quiet()}, backup.Options{Type: backup.TypeFull, Tier: "daily"})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return m
}

// archiveAll switches WAL and waits until the switched segment is archived.
func (l *lab) archiveAll(t *testing.T) {
	t.Helper()
	seg := l.pg.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	testutil.WaitFor(t, 60*time.Second, "segment "+seg+" archived", func() (bool, error) {
		return l.pg.QueryString(t, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg, nil
	})
}

func (l *lab) deps(t *testing.T) Deps {
	ids, err := keys.Identities(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return Deps{Cfg: l.cfg, Repos: l.repos, Identities: ids, Log: quiet()}
}

func (l *lab) opts(o Options) Options {
	o.AgentPath, o.ConfigPath = l.bin, l.cfg.Path
	o.Parallel = 2
	o.ReplayTimeout = 2 * time.Minute
	return o
}

func (l *lab) run(t *testing.T, o Options) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, l.deps(t), l.opts(o))
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	if _, err := os.Stat(res.Scratch); !o.Keep && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the scratch copy %s is still there after the drill (%v), cleanup %q", res.Scratch, err, res.Cleanup)
	}
	if b, err := json.MarshalIndent(res, "", "  "); err == nil {
		t.Logf("result:\n%s", b)
	}
	return res
}

func count(r *Result, table string) (int64, bool) {
	for _, c := range r.RowCounts.Counts {
		if c.Database == "postgres" && c.Table == table {
			return c.Rows, true
		}
	}
	return 0, false
}

// TestDrill: drills on one source and its backup: a drill to the latest
// WAL passes and compares its counts with the source's; a PITR drill to
// before a DELETE passes and shows the deleted rows; a failing SQL check
// fails the drill with got/want; bad requests are refused with nothing
// created; a flipped byte in a data object of the backup fails the drill
// naming the object.
func TestDrill(t *testing.T) {
	l := newLab(t)
	l.pg.Exec(t, "CREATE TABLE t(id int PRIMARY KEY, pad text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
	l.pg.Exec(t, "CREATE TABLE keep(id int); INSERT INTO keep SELECT generate_series(1, 50)")
	spc := filepath.Join(l.dir, "spc")
	if err := os.Mkdir(spc, 0o700); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, spc)
	l.pg.Exec(t, fmt.Sprintf("CREATE TABLESPACE ts LOCATION '%s'", spc))
	l.pg.Exec(t, "CREATE TABLE spc(id int) TABLESPACE ts; INSERT INTO spc SELECT generate_series(1, 7)")
	rel := l.pg.QueryString(t, "SELECT pg_relation_filepath('t')")
	m := l.backup(t)
	l.pg.Exec(t, "INSERT INTO t SELECT g, 'after' FROM generate_series(5001, 5100) g")
	before := l.pg.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	target, err := time.Parse(time.RFC3339Nano, before)
	if err != nil {
		t.Fatal(err)
	}
	l.pg.Exec(t, "DELETE FROM keep")
	l.archiveAll(t)
	checksFile := filepath.Join(t.TempDir(), "checks.yaml")
	if err := os.WriteFile(checksFile, []byte(`
- name: t rows
  database: postgres
  sql: SELECT count(*) FROM t
  expect: "5100"
- name: keep emptied
  sql: SELECT count(*) = 0 FROM keep
  expect: "t"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	checks, err := LoadChecks(checksFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("latest", func(t *testing.T) {
		res := l.run(t, Options{Tier: "daily", Checks: checks, SourceDSN: l.pg.DSN()})
		if !res.OK {
			t.Fatalf("drill failed: %s\n%+v", res.Reason, res)
		}
		if res.Backup != m.ID || res.Tier != "daily" || res.Target != "latest" || res.Cleanup != "deleted" {
			t.Errorf("backup %s tier %q target %q cleanup %q, want %s, daily, latest, deleted", res.Backup, res.Tier, res.Target, res.Cleanup, m.ID)
		}
		tm := res.Timings
		if tm.FetchWrite <= 0 || tm.Replay <= 0 || tm.Checks <= 0 || tm.Total < tm.FetchWrite+tm.Replay+tm.Checks {
			t.Errorf("timings %+v: want each non-zero and the total at least their sum", tm)
		}
		if res.Amcheck == nil || !res.Amcheck.OK || len(res.Checks) != 2 || !res.Checks[0].OK || !res.Checks[1].OK {
			t.Errorf("amcheck %+v, checks %+v: want all passed", res.Amcheck, res.Checks)
		}
		rc := res.RowCounts
		if !rc.Compared || rc.MismatchCount != 0 || rc.Tables != 3 || rc.Rows != 5107 {
			t.Errorf("row counts %+v: want 3 tables, 5107 rows, compared without mismatch", rc)
		}
		if res.RPO == nil || res.RPO.NewestCommit == nil || res.RPO.NewestCommit.Before(target) || res.RPO.Seconds <= 0 || res.RPO.Seconds > 120 {
			t.Errorf("rpo %+v: want the DELETE's commit (after %s), a little before the drill's start", res.RPO, target)
		}
	})

	t.Run("pitr before the delete", func(t *testing.T) {
		res := l.run(t, Options{TargetTime: &target, SourceDSN: l.pg.DSN()})
		if !res.OK {
			t.Fatalf("drill to %s failed: %s", before, res.Reason)
		}
		if n, ok := count(res, "public.keep"); !ok || n != 50 {
			t.Errorf("keep: %d rows (found %v), want the 50 deleted after the target", n, ok)
		}
		if n, _ := count(res, "public.t"); n != 5100 {
			t.Errorf("t: %d rows, want 5100", n)
		}
		if res.RowCounts.Compared || !strings.Contains(res.RowCounts.Note, "not compared") {
			t.Errorf("row counts %+v: a target in the past cannot be compared with the source now", res.RowCounts)
		}
		if res.RPO == nil || res.RPO.NewestCommit == nil || res.RPO.NewestCommit.After(target) || !res.RPO.Against.Equal(target) {
			t.Errorf("rpo %+v: want the last commit at or before the target %s, measured against it", res.RPO, target)
		}
	})

	t.Run("failing check", func(t *testing.T) {
		bad := []Check{{Name: "keep has rows", Database: "postgres", SQL: "SELECT count(*) FROM keep", Expect: "50"}}
		scratch := pgtest.OwnedDir(t, "pgdr-drill-kept-")
		res := l.run(t, Options{BackupID: "latest", Checks: bad, Scratch: scratch, Keep: true})
		if _, err := os.Stat(filepath.Join(scratch, "data", "PG_VERSION")); err != nil || !res.Kept || !strings.HasPrefix(res.Cleanup, "kept at "+scratch) {
			t.Errorf("--keep: kept %v, cleanup %q, %v: want the stopped copy left in %s", res.Kept, res.Cleanup, err, scratch)
		}
		if _, err := os.Stat(filepath.Join(scratch, "tablespaces", "ts", "PG_15_202209061")); err != nil {
			t.Errorf("the tablespace was not restored into the scratch directory: %v", err)
		}
		if n, _ := count(res, "public.spc"); n != 7 {
			t.Errorf("spc (in tablespace ts): %d rows, want 7", n)
		}
		if _, err := os.Stat(filepath.Join(scratch, "data", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--keep: the scratch server is still running (%v)", err)
		}
		if res.OK || len(res.Checks) != 1 || res.Checks[0].OK || res.Checks[0].Got != "0" || res.Checks[0].Want != "50" {
			t.Fatalf("ok %v, checks %+v: want the check failed with got 0, want 50", res.OK, res.Checks)
		}
		if !strings.Contains(res.Reason, `check "keep has rows": got "0", want "50"`) {
			t.Errorf("reason %q does not name the check with got/want", res.Reason)
		}
		if res.RowCounts == nil || res.RowCounts.Compared || !strings.Contains(res.RowCounts.Note, "no source") {
			t.Errorf("row counts %+v: want recorded, not compared, saying why", res.RowCounts)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		ctx := context.Background()
		d := l.deps(t)
		nonEmpty := pgtest.OwnedDir(t, "pgdr-drill-full-")
		if err := os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		inside := filepath.Join(l.pg.PGData, "drill")
		future := time.Now().Add(time.Hour)
		early := m.StopTime.Add(-time.Hour)
		absent := filepath.Join(t.TempDir(), "scratch")
		cases := []struct {
			name string
			o    Options
			want []string
		}{
			{"scratch is pgdata", Options{Scratch: l.pg.PGData}, []string{l.pg.PGData, "is the production data directory"}},
			{"scratch inside pgdata", Options{Scratch: inside}, []string{inside, "inside the production data directory"}},
			{"scratch holds pgdata", Options{Scratch: l.pg.Dir}, []string{l.pg.Dir, "holds the production data directory"}},
			{"scratch inside a tablespace", Options{Scratch: filepath.Join(spc, "drill")}, []string{filepath.Join(spc, "drill"), "is inside tablespace", "of the production data directory (" + spc + ")"}},
			{"scratch is a tablespace's parent", Options{Scratch: l.dir}, []string{l.dir, "holds tablespace"}},
			{"scratch not empty", Options{Scratch: nonEmpty}, []string{nonEmpty, "not empty"}},
			{"unknown backup", Options{BackupID: "20200101T000000F", Scratch: absent}, []string{"no repository holds backup 20200101T000000F"}},
			{"not a backup id", Options{BackupID: "yesterday", Scratch: absent}, []string{`"yesterday" is not a backup ID`}},
			{"unknown tier", Options{Tier: "hourly", Scratch: absent}, []string{`no backup of tier "hourly"`}},
			{"future target", Options{TargetTime: &future, Scratch: absent}, []string{"in the future"}},
			{"target before the backup", Options{BackupID: m.ID, TargetTime: &early, Scratch: absent}, []string{"before backup " + m.ID + " ends"}},
			{"production port", Options{Port: l.pg.Port, Scratch: absent}, []string{fmt.Sprintf("port %d is the production server's", l.pg.Port)}},
			{"no parent", Options{Scratch: filepath.Join(absent, "s")}, []string{"its parent " + absent + " does not exist"}},
		}
		if os.Geteuid() == 0 {
			// t.TempDir() is root's, mode 0700: postgres cannot reach
			// anything below it.
			cases = append(cases, struct {
				name string
				o    Options
				want []string
			}{"scratch out of the server's reach", Options{Scratch: absent}, []string{absent, "the scratch server runs as postgres, who cannot enter"}})
		}
		for _, c := range cases {
			res, err := Run(ctx, d, l.opts(c.o))
			if err == nil {
				t.Errorf("%s: drill ran (ok %v, reason %q), want refused", c.name, res.OK, res.Reason)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not say %q", c.name, err, w)
				}
			}
		}
		if os.Geteuid() == 0 {
			// A configuration only root can read: the scratch server's
			// restore_command, run as postgres, could not read it.
			private := filepath.Join(pgtest.OwnedDir(t, "pgdr-drill-cfg-"), "agent.yaml")
			b, err := os.ReadFile(l.cfg.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(private, b, 0o600); err != nil {
				t.Fatal(err)
			}
			scratch := filepath.Join(pgtest.OwnedDir(t, "pgdr-drill-s-"), "s")
			o := l.opts(Options{Scratch: scratch})
			o.ConfigPath = private
			_, err = Run(ctx, d, o)
			if err == nil || !strings.Contains(err.Error(), "the agent's configuration "+private+" cannot be read by postgres") {
				t.Errorf("a configuration postgres cannot read: %v, want refused naming it", err)
			}
			if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was left by a refused drill", scratch)
			}
		}
		if _, err := os.Stat(inside); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created by a refused drill", inside)
		}
		if _, err := os.Stat(absent); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created by a refused drill", absent)
		}
		if ents, _ := os.ReadDir(nonEmpty); len(ents) != 1 {
			t.Errorf("the non-empty scratch holds %d entries after the refusal, want its 1", len(ents))
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		// Cancelled once the scratch server is being started: the drill
		// stops it and deletes the copy all the same.
		scratch := filepath.Join(pgtest.OwnedDir(t, "pgdr-drill-cancel-"), "s")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			deadline := time.Now().Add(2 * time.Minute)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := os.Stat(filepath.Join(scratch, "postgres.log")); err == nil {
					cancel()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		res, err := Run(ctx, l.deps(t), l.opts(Options{Scratch: scratch}))
		if err != nil {
			t.Fatal(err)
		}
		if res.OK {
			t.Logf("the drill finished before it was cancelled")
		} else if t.Logf("reason: %s", res.Reason); !strings.HasPrefix(res.Reason, "drill cancelled: context canceled") {
			t.Errorf("reason %q: want the cancellation", res.Reason)
		}
		if _, err := os.Stat(scratch); !errors.Is(err, os.ErrNotExist) || res.Cleanup != "deleted" {
			t.Errorf("after a cancelled drill: scratch %v, cleanup %q; want deleted", err, res.Cleanup)
		}
		if pids := processesNaming(t, scratch); len(pids) > 0 {
			t.Errorf("processes still running on the cancelled drill's scratch copy: %v", pids)
		}
	})

	t.Run("cli, source moved on", func(t *testing.T) {
		// Rows the source committed after its last archived WAL: a drill
		// to the latest WAL cannot have them, and the comparison with the
		// source says so and fails the drill.
		l.pg.Exec(t, "INSERT INTO keep SELECT generate_series(1, 10)")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, l.bin, "drill", "--config", l.cfg.Path, "--json", "--checks", checksFile, "--source-dsn", l.pg.DSN(), "--parallel", "2")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("pgdr-agent drill: %v, want exit 1\n%s\n%s", err, out, stderr.String())
		}
		var res Result
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("drill --json: %v\n%s", err, out)
		}
		rc := res.RowCounts
		if res.OK || rc == nil || rc.MismatchCount != 1 || rc.Mismatches[0].Table != "public.keep" || rc.Mismatches[0].Rows != 0 ||
			rc.Mismatches[0].SourceRows == nil || *rc.Mismatches[0].SourceRows != 10 || !strings.Contains(res.Reason, "row counts differ from the source in 1 table(s), e.g. postgres.public.keep: restored 0, source 10") {
			t.Fatalf("ok %v, reason %q, row counts %+v: want public.keep restored 0, source 10", res.OK, res.Reason, rc)
		}
		if len(res.Checks) != 2 || !res.Checks[0].OK || res.Timings.Total <= 0 || res.Cleanup != "deleted" {
			t.Errorf("checks %+v, timings %+v, cleanup %q", res.Checks, res.Timings, res.Cleanup)
		}
		if _, err := os.Stat(res.Scratch); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("scratch %s left: %v", res.Scratch, err)
		}
	})

	t.Run("damaged backup", func(t *testing.T) {
		var obj string
		for _, f := range m.Files {
			if f.Path == rel {
				obj = f.Object
			}
		}
		if obj == "" {
			t.Fatalf("backup %s holds no object for %s", m.ID, rel)
		}
		path := filepath.Join(l.repoDir, "main", filepath.FromSlash(obj))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		res := l.run(t, Options{BackupID: m.ID})
		if res.OK || !strings.HasPrefix(res.Reason, "restore: ") || !strings.Contains(res.Reason, obj) {
			t.Fatalf("ok %v, reason %q: want a failed restore naming %s", res.OK, res.Reason, obj)
		}
	})
	t.Run("corrupt index", func(t *testing.T) {
		// A leaf page of t's primary key zeroed while the source is
		// stopped: valid for page checksums (a new page), so the backup
		// takes it, and pg_amcheck finds it.
		idx := l.pg.QueryString(t, "SELECT pg_relation_filepath('t_pkey')")
		l.pg.Stop(t, "fast")
		f, err := os.OpenFile(filepath.Join(l.pg.PGData, idx), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, 8192), 8192); err != nil {
			t.Fatal(err)
		}
		f.Close()
		l.pg.Start(t)
		m2 := l.backup(t)
		res := l.run(t, Options{BackupID: m2.ID})
		if res.OK || res.Amcheck == nil || res.Amcheck.OK || len(res.Amcheck.Problems) == 0 ||
			!strings.Contains(res.Amcheck.Problems[0], `"postgres.public.t_pkey"`) || !strings.Contains(res.Reason, "pg_amcheck: ") {
			t.Fatalf("ok %v, reason %q, amcheck %+v: want pg_amcheck failing on postgres.public.t_pkey", res.OK, res.Reason, res.Amcheck)
		}
	})
}

// processesNaming lists the processes whose command line names path.
func processesNaming(t *testing.T, path string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), path) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
