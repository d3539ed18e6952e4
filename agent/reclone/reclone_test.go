package reclone

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
)

// fakeDataDir is a data directory with a few files, returned with their
// contents by relative path.
func fakeDataDir(t *testing.T) (string, map[string]string) {
	t.Helper()
	pgdata := filepath.Join(t.TempDir(), "pgdata")
	files := map[string]string{
		"PG_VERSION":           "15\n",
		"postgresql.conf":      "port = 5433 # the node's own\n",
		"postgresql.auto.conf": "work_mem = '8MB'\n",
		"base/1/1259":          "old primary's pages",
		"pgdr.fenced":          `{"node":"pg-a1","reason":"test","epoch":2}`,
	}
	for p, c := range files {
		full := filepath.Join(pgdata, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pgdata, files
}

func checkFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	for p, c := range want {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(b) != c {
			t.Errorf("%s in %s: %q %v, want %q", p, dir, b, err, c)
		}
	}
}

// siblings lists the names next to pgdata that start with its name.
func siblings(t *testing.T, pgdata string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Dir(pgdata))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.Name() != filepath.Base(pgdata) && strings.HasPrefix(e.Name(), filepath.Base(pgdata)) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestMoveAsideRestore: the data directory is renamed (not copied) to
// pgdata.pgdr-old-<UTC time> beside it, a new empty one with mode 0700
// takes its place, a second move in the same second gets another name,
// and restoreAside drops a partial copy and puts the old data back.
func TestMoveAsideRestore(t *testing.T) {
	pgdata, files := fakeDataDir(t)
	if err := os.Chmod(pgdata, 0o750); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(filepath.Join(pgdata, "base/1/1259"))
	now := time.Date(2025, 1, 2, 4, 4, 5, 0, time.FixedZone("CET", 3600))
	old, err := moveAside(pgdata, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := pgdata + ".pgdr-old-20250102T030405Z"; old != want {
		t.Fatalf("old data at %s, want %s", old, want)
	}
	checkFiles(t, old, files)
	after, _ := os.Stat(filepath.Join(old, "base/1/1259"))
	if !os.SameFile(before, after) {
		t.Error("the old data was copied, not renamed")
	}
	fi, err := os.Stat(pgdata)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new data directory: %v %v", fi, err)
	}
	if es, _ := os.ReadDir(pgdata); len(es) != 0 {
		t.Fatalf("the new data directory is not empty: %v", es)
	}

	// A second move in the same second never replaces the first.
	os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("second"), 0o600)
	old2, err := moveAside(pgdata, now)
	if err != nil || old2 != pgdata+".pgdr-old-20250102T030405Z-2" {
		t.Fatalf("second move: %s %v", old2, err)
	}
	checkFiles(t, old, files)
	if err := restoreAside(pgdata, old2); err != nil {
		t.Fatal(err)
	}

	// A partial copy is dropped and the old data is back.
	os.MkdirAll(filepath.Join(pgdata, "base/1"), 0o700)
	os.WriteFile(filepath.Join(pgdata, "base/1/1259"), []byte("partial copy"), 0o600)
	if err := restoreAside(pgdata, old); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, pgdata, files)
	if s := siblings(t, pgdata); len(s) != 0 {
		t.Errorf("left beside the data directory: %v", s)
	}

	// Without the old data nothing is removed.
	if err := restoreAside(pgdata, pgdata+".pgdr-old-missing"); err == nil {
		t.Fatal("restoreAside without the old data succeeded")
	}
	checkFiles(t, pgdata, files)
}

// TestMoveAsideSymlink: a symlinked PGDATA is moved at its target, so
// the link goes on naming the live data directory.
func TestMoveAsideSymlink(t *testing.T) {
	real, files := fakeDataDir(t)
	link := filepath.Join(t.TempDir(), "pgdata-link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	r, _ := fakeRecloner(t, link, `mkdir -p "$dir" && echo 15 > "$dir/PG_VERSION"`)
	old, _, err := r.copyFromPrimary(context.Background(), "host=127.0.0.1 port=1", "127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(old) != filepath.Dir(real) {
		t.Errorf("old data at %s, not beside %s", old, real)
	}
	checkFiles(t, old, files)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link: %v %v", fi, err)
	}
	checkFiles(t, link, map[string]string{"PG_VERSION": "15\n"})
}

func TestCopyableRefuses(t *testing.T) {
	pgdata, _ := fakeDataDir(t)
	if err := copyable(pgdata); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(pgdata, "pg_tblspc"), 0o700)
	os.Symlink("/somewhere", filepath.Join(pgdata, "pg_tblspc", "16384"))
	if err := copyable(pgdata); err == nil || !strings.Contains(err.Error(), "tablespace") {
		t.Fatalf("tablespaces: %v", err)
	}
}

// fakeRecloner is a Recloner whose bindir holds a pg_basebackup script:
// it records its arguments, sets dir to its -D and runs body. It is given
// the DSN helpers of the orders (testHostPort, testPrimaryConninfo) and
// nothing else: the tests stop before the recovery settings.
func fakeRecloner(t *testing.T, pgdata, body string) (*Recloner, string) {
	t.Helper()
	bin := t.TempDir()
	args := filepath.Join(bin, "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + args + "\ndir=$2\n" + body + "\n"
	if err := os.WriteFile(filepath.Join(bin, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.Node.Name = "pg-a1"
	cfg.Postgres.PGData = pgdata
	cfg.Postgres.BinDir = bin
	log := slog.New(slog.DiscardHandler)
	return New(Deps{Cfg: cfg, Log: log, PG: testPG(cfg, log), ConfigFiles: testConfigFiles,
		HostPort: testHostPort, PrimaryConninfo: testPrimaryConninfo}), args
}

// testPG is the daemon's process control for cfg's server.
func testPG(cfg *config.Config, log *slog.Logger) *pgctl.Controller {
	return pgctl.New(pgctl.Config{BinDir: cfg.Postgres.BinDir, PGData: cfg.Postgres.PGData, DSN: cfg.Postgres.DSN, Log: log})
}

// testConfigFiles are the files the daemon keeps across a rejoin.
var testConfigFiles = []string{"postgresql.conf", "pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf"}

// testHostPort is the orders' hostPort: where dsn connects.
func testHostPort(dsn string) (string, uint16, error) {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", 0, errors.New("the primary's DSN does not parse")
	}
	return pc.Host, pc.Port, nil
}

// testPrimaryConninfo is the orders' primaryConninfo for a key=value dsn.
func testPrimaryConninfo(dsn, node string) string {
	return strings.TrimSpace(dsn) + " application_name=" + node
}

// TestRecloneCopyFails: when pg_basebackup fails (after writing part of
// a copy), the original data directory is back in place, nothing is left
// beside it, and the error names both pg_rewind's reason and the copy's.
func TestRecloneCopyFails(t *testing.T) {
	pgdata, files := fakeDataDir(t)
	r, _ := fakeRecloner(t, pgdata, `echo 15 > "$dir/PG_VERSION"; echo 'pg_basebackup: error: connection to server failed: Connection refused' >&2; exit 1`)
	why := errors.New("pg_rewind cannot rejoin this node: it needs wal_log_hints=on or data checksums")
	_, err := r.Reclone(context.Background(), 3, "pg-a2", "host=127.0.0.1 port=1 user=postgres password=secret", why)
	if err == nil {
		t.Fatal("reclone succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"wal_log_hints", "pg_basebackup from 127.0.0.1:1", "Connection refused", "back in place"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "secret") {
		t.Errorf("the error quotes the password: %s", msg)
	}
	checkFiles(t, pgdata, files)
	if fi, _ := os.Stat(pgdata); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", fi.Mode())
	}
	if s := siblings(t, pgdata); len(s) != 0 {
		t.Errorf("left beside the data directory: %v", s)
	}
}

// TestRecloneCopy: a successful copy keeps the old data beside the new,
// runs pg_basebackup with the expected arguments, carries the fenced
// marker over, and the node's configuration files go back over the
// primary's.
func TestRecloneCopy(t *testing.T) {
	pgdata, files := fakeDataDir(t)
	r, args := fakeRecloner(t, pgdata, `echo 15 > "$dir/PG_VERSION" && echo 'port = 5432 # the primary' > "$dir/postgresql.conf" && touch "$dir/standby.signal"`)
	saved := readConfigFiles(pgdata, testConfigFiles)
	old, note, err := r.copyFromPrimary(context.Background(), "host=127.0.0.1 port=5432 user=postgres", "127.0.0.1", 5432)
	if err != nil {
		t.Fatal(err)
	}
	if note != "" {
		t.Errorf("note %q", note)
	}
	if !strings.HasPrefix(old, pgdata+".pgdr-old-") {
		t.Fatalf("old data at %s", old)
	}
	checkFiles(t, old, files)
	b, _ := os.ReadFile(args)
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{"-D", pgdata, "-d", "host=127.0.0.1 port=5432 user=postgres application_name=pg-a1", "-X", "stream", "-c", "fast", "-R", "--no-password"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("pg_basebackup args %q, want %q", got, want)
	}
	if fi, err := health.ReadFenced(pgdata); fi == nil || fi.Epoch != 2 {
		t.Errorf("fenced marker in the copy: %+v %v", fi, err)
	}
	checkFiles(t, pgdata, map[string]string{"postgresql.conf": "port = 5432 # the primary\n"})
	if err := r.putBackConfigFiles(saved); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, pgdata, map[string]string{"postgresql.conf": files["postgresql.conf"], "postgresql.auto.conf": files["postgresql.auto.conf"], "PG_VERSION": "15\n"})
	if _, err := os.Stat(filepath.Join(pgdata, "base")); err == nil {
		t.Error("the old data's files are in the copy")
	}
}

// TestRecloneCopyDropsPromotePending: review 12. pg_basebackup copies
// the source's pgdr.promote-pending (its own promotion's guard, when the
// copy is taken while that promotion is pending): left in the copy, the
// agent here would take it for its own from another boot and fence the
// re-cloned node on its next start. The copy holds none; the old data
// keeps whatever it held (it is never changed).
func TestRecloneCopyDropsPromotePending(t *testing.T) {
	pgdata, files := fakeDataDir(t)
	own := `{"epoch":1,"give_up":"2026-12-07T12:00:00Z"}`
	if err := os.WriteFile(filepath.Join(pgdata, "pgdr.promote-pending"), []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	files["pgdr.promote-pending"] = own
	r, _ := fakeRecloner(t, pgdata, `echo 15 > "$dir/PG_VERSION" && echo '{"epoch":7,"give_up":"2026-12-07T12:00:00Z","boot_id":"the-source"}' > "$dir/pgdr.promote-pending"`)
	old, _, err := r.copyFromPrimary(context.Background(), "host=127.0.0.1 port=5432 user=postgres", "127.0.0.1", 5432)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "pgdr.promote-pending")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the copy holds the source's pgdr.promote-pending (%v): the agent here would fence the node on its next start", err)
	}
	checkFiles(t, old, files)
	checkFiles(t, pgdata, map[string]string{"PG_VERSION": "15\n"})
}
