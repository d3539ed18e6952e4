package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// backupInfo is one entry of backup-list --json.
type backupInfo struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Parent        string    `json:"parent"`
	Repo          string    `json:"repo"`
	StopTime      time.Time `json:"stop_time"`
	StartLSN      string    `json:"start_lsn"`
	StopLSN       string    `json:"stop_lsn"`
	DatabaseBytes int64     `json:"database_bytes"`
	StoredBytes   int64     `json:"stored_bytes"`
	FromStandby   bool      `json:"from_standby"`
	Files         int       `json:"files"`
	CorruptPages  int       `json:"corrupt_pages"`
}

// listBackups runs backup-list --json and returns the backups of repo
// (every repository when repoName is "").
func listBackups(t *testing.T, cfg, repoName string) []backupInfo {
	t.Helper()
	r := mustAgent(t, "backup-list", "--config", cfg, "--json")
	var out struct {
		Backups []backupInfo `json:"backups"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("backup-list --json: %v\n%s", err, r.stdout)
	}
	var bs []backupInfo
	for _, b := range out.Backups {
		if repoName == "" || b.Repo == repoName {
			bs = append(bs, b)
		}
	}
	return bs
}

func findBackup(t *testing.T, bs []backupInfo, id string) backupInfo {
	t.Helper()
	for _, b := range bs {
		if b.ID == id {
			return b
		}
	}
	t.Fatalf("backup %s is not in backup-list: %+v", id, bs)
	return backupInfo{}
}

// loadManifest reads a backup's manifest from the first repository of cfg,
// as restore does.
func loadManifest(t *testing.T, cfg, id string) *backup.Manifest {
	t.Helper()
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := repo.OpenAll(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	m, err := backup.LoadManifest(ctx, rs[0], c.Cluster, id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// backupObjectPath is where the lab's file repository keeps a backup's
// object (key under the cluster, e.g. backup/<id>/pgdata/base/5/1259).
func (l *lab) backupObjectPath(object string) string {
	return filepath.Join(l.repoDir, "main", filepath.FromSlash(object))
}

// storedObjects lists the objects a backup holds in the file repository
// (keys under the cluster: backup/<id>/pgdata/...).
func (l *lab) storedObjects(t *testing.T, id string) []string {
	t.Helper()
	root := filepath.Join(l.repoDir, "main")
	var out []string
	err := filepath.WalkDir(filepath.Join(root, "backup", id, "pgdata"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".pgdr-tmp-") {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// flipByte flips one byte in the middle of a file.
func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 {
		t.Fatalf("%s has %d bytes, too small to damage", path, len(b))
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// restoreOutput is restore --json's output.
type restoreOutput struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Restore struct {
		Backup      string   `json:"backup"`
		Chain       []string `json:"chain"`
		Files       int      `json:"files"`
		Bytes       int64    `json:"bytes"`
		ObjectsRead int      `json:"objects_read"`
		// Timeline is the timeline recovery follows.
		Timeline uint32 `json:"timeline"`
		// RestorePoint is reported for --target-name.
		RestorePoint *struct {
			Name     string    `json:"name"`
			LSN      string    `json:"lsn"`
			EndLSN   string    `json:"end_lsn"`
			Time     time.Time `json:"time"`
			Timeline uint32    `json:"timeline"`
		} `json:"restore_point"`
	} `json:"restore"`
	Reached struct {
		State string `json:"state"`
		LSN   string `json:"lsn"`
	} `json:"reached"`
}

func parseRestore(t *testing.T, r result) restoreOutput {
	t.Helper()
	var out restoreOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("restore --json: %v\nstdout: %s\nstderr: %s", err, r.stdout, tail(r.stderr, 3000))
	}
	return out
}

// restoreJSON is restoreTo that also returns what restore reported.
func (l *lab) restoreJSON(t *testing.T, cfg string, args ...string) (*pgtest.Cluster, restoreOutput) {
	t.Helper()
	c := pgtest.Empty(t, pgtest.Options{})
	base := []string{"restore", "--config", cfg, "--pgdata", c.PGData, "--no-archive", "--start",
		"--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "3m", "--json"}
	r := runAgent(t, nil, append(base, args...)...)
	if r.code != 0 {
		t.Fatalf("restore %v: exit %d\n%s\n%s\nrestore log:\n%s", args, r.code, r.stdout, tail(r.stderr, 3000), tail(readFile(restoreLog(c.PGData)), 3000))
	}
	out := parseRestore(t, r)
	if !out.OK {
		t.Fatalf("restore %v: exit 0 but ok=false: %s", args, r.stdout)
	}
	return c, out
}

// restoreFails runs a restore with --start into c's data directory that
// must fail before PostgreSQL is started, and returns its result.
func restoreFails(t *testing.T, cfg string, c *pgtest.Cluster, args ...string) result {
	t.Helper()
	pgdata := c.PGData
	base := []string{"restore", "--config", cfg, "--pgdata", pgdata, "--start",
		"--port", fmt.Sprint(c.Port), "--socket-dir", c.Dir, "--wait-timeout", "1m", "--json"}
	r := runAgent(t, nil, append(base, args...)...)
	if r.code == 0 {
		t.Fatalf("restore %v succeeded, want a failure\n%s", args, r.stdout)
	}
	if out := parseRestore(t, r); out.OK || out.Error == "" {
		t.Fatalf("restore %v: exit %d but the JSON output does not report the error: %s", args, r.code, r.stdout)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); err == nil {
		t.Fatalf("restore %v failed but started PostgreSQL in %s", args, pgdata)
	}
	if _, err := os.Stat(restoreLog(pgdata)); err == nil {
		t.Fatalf("restore %v failed but ran pg_ctl start (%s exists):\n%s", args, restoreLog(pgdata), readFile(restoreLog(pgdata)))
	}
	return r
}

// wantDirState fails unless dir is absent (absent true) or holds
// exactly the names in want.
func wantDirState(t *testing.T, what, dir string, absent bool, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if absent {
		if err == nil {
			t.Fatalf("%s: %s was created (%d entries)", what, dir, len(ents))
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s: %s holds %v, want %v", what, dir, got, want)
	}
}

// batchesIn returns the distinct batch numbers in the batches table.
func batchesIn(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.QueryString(t, "SELECT coalesce(string_agg(DISTINCT batch::text, ',' ORDER BY batch::text), '') FROM batches")
}

// utcNow is the server's clock as a recovery target time.
func utcNow(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

// bgBench is pgbench running in the background against a cluster.
type bgBench struct {
	c    *pgtest.Cluster
	cmd  *exec.Cmd
	out  testutil.SyncBuffer
	done chan struct{}
}

// startPgbench starts pgbench -n with args (besides the database) for up
// to two minutes and waits until it has committed a transaction. It is
// killed when the test ends if stop was not called.
func startPgbench(t *testing.T, c *pgtest.Cluster, args ...string) *bgBench {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &bgBench{c: c, done: make(chan struct{})}
	b.cmd = c.Command(ctx, "pgbench", append(append([]string{"-n", "-T", "120"}, args...), "postgres")...)
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.out
	if err := b.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		cancel()
		<-b.done
	})
	testutil.WaitFor(t, 30*time.Second, "pgbench to commit transactions", func() (bool, error) {
		if !b.running() {
			t.Fatalf("pgbench ended early:\n%s", b.out.String())
		}
		n := c.QueryString(t, "SELECT count(*)::text FROM pgbench_history")
		return n != "0", fmt.Errorf("pgbench_history has %s rows", n)
	})
	return b
}

func (b *bgBench) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// stop interrupts pgbench and waits until its sessions are gone.
func (b *bgBench) stop(t *testing.T) {
	t.Helper()
	b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("pgbench did not stop on SIGINT:\n%s", b.out.String())
	}
	testutil.WaitFor(t, 30*time.Second, "pgbench's sessions to end", func() (bool, error) {
		n := b.c.QueryString(t, "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = 'pgbench'")
		return n == "0", fmt.Errorf("%s sessions left", n)
	})
}
