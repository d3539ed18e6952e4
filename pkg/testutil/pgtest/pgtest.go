package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// DefaultBinDir is where Debian installs PostgreSQL 15's server binaries.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Options configure a new cluster.
type Options struct {
	BinDir     string
	InitdbArgs []string          // e.g. --data-checksums
	Conf       map[string]string // postgresql.conf settings appended after initdb
	Env        []string          // extra environment for the postmaster (and so archive_command)
}

// Cluster is one PostgreSQL server owned by a test.
type Cluster struct {
	Dir    string // a directory owned by the server's user, holding PGData and logs
	PGData string
	Port   int
	BinDir string
	env    []string
	cred   *syscall.Credential
}

// Credential returns the uid/gid PostgreSQL must run as: postgres when the
// test runs as root, else nil (the current user).
func Credential(t testing.TB) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("tests run as root need a postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// OwnedDir makes a fresh directory (mode 0755) owned by the server's user,
// removed when the test ends.
func OwnedDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	Chown(t, dir)
	return dir
}

// Chown gives path (recursively) to the server's user when running as root.
func Chown(t testing.TB, path string) {
	t.Helper()
	cred := Credential(t)
	if cred == nil {
		return
	}
	err := filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// New runs initdb for a new cluster; Start starts it.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := Empty(t, opts)
	args := append([]string{"-D", c.PGData, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"}, opts.InitdbArgs...)
	c.Run(t, "initdb", args...)
	conf := map[string]string{
		"fsync":             "off",
		"logging_collector": "off",
		"max_wal_size":      "'256MB'",
	}
	for k, v := range opts.Conf {
		conf[k] = v
	}
	c.AppendConf(t, conf)
	c.AppendConf(t, c.LocalConf())
	return c
}

// LocalConf is the settings that tie a data directory to this Cluster's
// port and socket directory (append them after restoring a copy of another
// cluster's files).
func (c *Cluster) LocalConf() map[string]string {
	return map[string]string{
		"listen_addresses":        "'127.0.0.1'",
		"port":                    strconv.Itoa(c.Port),
		"unix_socket_directories": "'" + c.Dir + "'",
	}
}

// Empty prepares a cluster's directory, port and clean-up without creating
// the data directory (for a restore or pg_basebackup to fill).
func Empty(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir
	}
	if _, err := os.Stat(filepath.Join(opts.BinDir, "postgres")); err != nil {
		t.Fatalf("PostgreSQL server binaries not found in %s (install postgresql-15): %v", opts.BinDir, err)
	}
	c := &Cluster{
		Dir:    OwnedDir(t, "pgdr-pg-"),
		BinDir: opts.BinDir,
		Port:   testutil.FreePort(t),
		env:    opts.Env,
		cred:   Credential(t),
	}
	c.PGData = filepath.Join(c.Dir, "pgdata")
	t.Cleanup(func() { c.stopQuiet() })
	return c
}

// AppendConf appends settings to postgresql.conf (in sorted order).
func (c *Cluster) AppendConf(t testing.TB, conf map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, conf[k])
	}
	f, err := os.OpenFile(filepath.Join(c.PGData, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
}

// Command builds a command for one of PostgreSQL's binaries, run as the
// server's user with the cluster's environment.
func (c *Cluster) Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, bin), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(append(os.Environ(), "PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(c.Port), "PGUSER=postgres", "PGDATABASE=postgres"), c.env...)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// Run runs a PostgreSQL binary and fails the test on error.
func (c *Cluster) Run(t testing.TB, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := c.Command(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, testutil.Trim(out))
	}
	return string(out)
}

// Start starts the server and waits until it accepts connections. A port
// taken between FreePort and the server's bind (another test's process on a
// loaded machine) is not the test's failure: the server is started again on
// a new port, up to four times; any other start failure fails the test with
// the server's log.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	logPath := filepath.Join(c.Dir, "postgres.log")
	for attempt := 0; ; attempt++ {
		var from int64
		if fi, err := os.Stat(logPath); err == nil {
			from = fi.Size()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := c.Command(ctx, "pg_ctl", "-D", c.PGData, "-l", logPath, "-w", "-t", "120", "start").CombinedOutput()
		cancel()
		if err == nil {
			return
		}
		b, _ := os.ReadFile(logPath)
		if from <= int64(len(b)) {
			b = b[from:]
		}
		if attempt < 4 && portTaken(string(b)) {
			t.Logf("port %d was taken before PostgreSQL bound it; starting on another port", c.Port)
			c.Port = testutil.FreePort(t)
			c.AppendConf(t, c.LocalConf())
			continue
		}
		t.Fatalf("pg_ctl start (port %d): %v\n%s\nserver log:\n%s", c.Port, err, testutil.Trim(out), testutil.Trim(b))
	}
}

// portTaken reports whether a server log says the listen port was in use.
func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") || strings.Contains(log, "could not bind IPv4 address")
}

// Stop stops the server with the given shutdown mode (fast, immediate, smart).
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	c.Run(t, "pg_ctl", "-D", c.PGData, "-m", mode, "-w", "-t", "120", "stop")
}

func (c *Cluster) stopQuiet() {
	if _, err := os.Stat(filepath.Join(c.PGData, "postmaster.pid")); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = c.Command(ctx, "pg_ctl", "-D", c.PGData, "-m", "immediate", "-w", "stop").Run()
}

// Log returns the server's log file content (for failure messages).
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "postgres.log"))
	return testutil.Trim(b)
}

// DSN is a libpq connection string for the server.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", c.Port)
}

// Conn opens a connection, closed when the test ends.
func (c *Cluster) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatalf("connecting to %s: %v", c.DSN(), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs SQL on a fresh connection and fails the test on error.
func (c *Cluster) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatalf("connecting to %s: %v", c.DSN(), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryString runs a one-value query and returns its text form.
func (c *Cluster) QueryString(t testing.TB, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatalf("connecting to %s: %v", c.DSN(), err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// PGBench runs pgbench against the server.
func (c *Cluster) PGBench(t testing.TB, args ...string) {
	t.Helper()
	c.Run(t, "pgbench", args...)
}
