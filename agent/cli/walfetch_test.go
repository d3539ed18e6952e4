package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// walFetchConfig writes a working configuration (an empty file repository)
// and returns its path and a pg_wal directory to fetch into.
func walFetchConfig(t *testing.T) (cfg, pgwal string) {
	t.Helper()
	dir := t.TempDir()
	pgdata := testutil.FakePGData(t, 7300000000000000042)
	id := filepath.Join(dir, "id.txt")
	rcpt, err := objstream.GenerateIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "agent.yaml")
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: r1, url: 'file://%s'}]\nencryption: {recipients: [%s], identity_file: %s}\nagent: {socket: %s}\n",
		pgdata, filepath.Join(dir, "repo"), rcpt, id, filepath.Join(dir, "agent.sock"))
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, filepath.Join(pgdata, "pg_wal")
}

// TestWalFetchExitStatus: PostgreSQL reads any restore_command exit below
// 126 as "not in the archive" and may end recovery there, so wal-fetch
// exits 1 only for that; every other failure (usage, configuration, a
// crash) exits >= 126 (invariant 15).
func TestWalFetchExitStatus(t *testing.T) {
	cfg, pgwal := walFetchConfig(t)
	pushSegment(t, cfg, pgwal, 2) // the repository holds the cluster
	const seg = "000000010000000000000003"
	dest := filepath.Join(pgwal, "RECOVERYXLOG")
	unreadable := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(unreadable, []byte("cluster: [c1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		hook func()
		want func(code int) bool
		says string
	}{
		{"not in the archive", []string{"wal-fetch", "--config", cfg, seg, dest}, nil, func(c int) bool { return c == ExitNotFound }, ""},
		{"missing DEST", []string{"wal-fetch", "--config", cfg, seg}, nil, fatal, "expected 2 argument(s), got 1"},
		{"no arguments", []string{"wal-fetch", "--config", cfg}, nil, fatal, "expected 2 argument(s)"},
		{"unknown flag", []string{"wal-fetch", "--config", cfg, "--bogus", seg, dest}, nil, fatal, "flag provided but not defined: -bogus"},
		{"flag without value", []string{"wal-fetch", seg, dest, "--config"}, nil, fatal, "flag needs an argument"},
		{"help among arguments", []string{"wal-fetch", "--help", seg, dest}, nil, fatal, "Usage: pgdr-agent wal-fetch"},
		{"no configuration", []string{"wal-fetch", seg, dest}, nil, fatal, "no configuration"},
		{"missing configuration file", []string{"wal-fetch", "--config", filepath.Join(t.TempDir(), "absent.yaml"), seg, dest}, nil, fatal, "absent.yaml"},
		{"malformed configuration", []string{"wal-fetch", "--config", unreadable, seg, dest}, nil, fatal, "invalid YAML"},
		{"not a WAL name", []string{"wal-fetch", "--config", cfg, "pg_control", dest}, nil, fatal, "not a WAL file name"},
		{"panic", []string{"wal-fetch", "--config", cfg, seg, dest}, func() { panic("forced by the test") }, fatal, "forced by the test"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("PGDR_CONFIG", "")
			var stdout, stderr bytes.Buffer
			e := env{stdout: &stdout, stderr: &stderr, walFetchHook: c.hook}
			code := run(e, c.args)
			if !c.want(code) {
				t.Fatalf("%s: exit %d\nstderr: %s", strings.Join(c.args, " "), code, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.says) {
				t.Fatalf("%s: stderr does not say %q:\n%s", strings.Join(c.args, " "), c.says, stderr.String())
			}
		})
	}
	// Help on its own is not a failure.
	var stderr bytes.Buffer
	if code := Main([]string{"wal-fetch", "--help"}, &stderr, &stderr); code != 0 || !strings.Contains(stderr.String(), "Exit 1: not in the archive") {
		t.Fatalf("wal-fetch --help: exit %d\n%s", code, stderr.String())
	}
}

func fatal(code int) bool { return code >= 126 }

// pushSegment writes segment segNo (1 MiB, timeline 1) into pgwal, marks it
// ready and pushes it, returning its name.
func pushSegment(t *testing.T, cfg, pgwal string, segNo uint64) string {
	t.Helper()
	const segSize = 1 << 20
	name := wal.SegmentName(1, segNo, segSize)
	if err := os.WriteFile(filepath.Join(pgwal, name), testutil.FakeSegment(7300000000000000042, 1, segNo, segSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pgwal, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"wal-push", "--config", cfg, filepath.Join(pgwal, name)}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-push %s: exit %d\n%s", name, code, stderr.String())
	}
	return name
}

// TestWalFetchRepositoryGone: a file repository not mounted, or its root
// moved, answers "no such file" for everything; wal-fetch must not take
// that for "not in the archive" (exit 1 ends recovery early): without the
// cluster's record in the repository every answer is fatal, naming the
// repository. Once the repository is back, 0 and 1 again.
func TestWalFetchRepositoryGone(t *testing.T) {
	cfg, pgwal := walFetchConfig(t)
	t.Setenv("PGDR_CONFIG", "")
	seg := pushSegment(t, cfg, pgwal, 3)
	missing := wal.SegmentName(1, 4, 1<<20)
	repoDir := filepath.Join(filepath.Dir(cfg), "repo")
	moved := repoDir + ".moved"
	fetch := func(name string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := Main([]string{"wal-fetch", "--config", cfg, name, filepath.Join(pgwal, "RECOVERYXLOG")}, &stdout, &stderr)
		return code, stderr.String()
	}
	if err := os.Rename(repoDir, moved); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{seg, missing} {
		if code, stderr := fetch(name); !fatal(code) || !strings.Contains(stderr, "r1") || !strings.Contains(stderr, "cluster.json") {
			t.Fatalf("wal-fetch %s from a moved repository: exit %d, want >= 126 naming repository r1 and its missing cluster.json\n%s", name, code, stderr)
		}
	}
	if err := os.Rename(moved, repoDir); err != nil {
		t.Fatal(err)
	}
	if code, stderr := fetch(seg); code != 0 {
		t.Fatalf("wal-fetch %s with the repository back: exit %d\n%s", seg, code, stderr)
	}
	if code, stderr := fetch(missing); code != ExitNotFound {
		t.Fatalf("wal-fetch %s (not archived) with the repository back: exit %d, want %d\n%s", missing, code, ExitNotFound, stderr)
	}
}
