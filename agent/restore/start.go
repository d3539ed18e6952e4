package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/agent/walship"
)

// Reached is where recovery stopped.
type Reached struct {
	State    string  `json:"state"` // promoted, paused, shut down
	LSN      string  `json:"lsn,omitempty"`
	LastXact string  `json:"last_replayed_commit,omitempty"`
	Seconds  float64 `json:"seconds"`
	// Partial is the stream partial wal-fetch served to recovery (as it
	// recorded in the data directory), nil when none.
	Partial *walship.PartialUse `json:"partial,omitempty"`
}

// StartOptions say how to start the restored server.
type StartOptions struct {
	BinDir  string
	Port    int    // 0: as in the restored configuration
	Socket  string // unix socket directory ("" = as configured)
	Action  string
	Timeout time.Duration
	LogFile string // the server's log ("" = LogPath(pgdata))
	// Settings are name=value pairs given to the postmaster as -c
	// options: they win over every configuration file, and only there
	// can data_directory be pinned (a restored postgresql.conf may name
	// another directory, and the postmaster would run on that one).
	Settings []string
}

// LogDir is the directory pgdr keeps in a data directory for its own files;
// backups leave its contents out (agent/backup/walk.go).
const LogDir = "pgdr"

// LogPath is where Start has the server write its log by default: inside
// the data directory, which the server's user can always write (its
// parent may be root's).
func LogPath(pgdata string) string { return filepath.Join(pgdata, LogDir, "restore.log") }

// Start starts PostgreSQL on the restored data directory (as the
// directory's owner when running as root), waits until recovery reaches
// its target (promoted, paused, or shut down) and reports where.
func Start(ctx context.Context, pgdata string, o StartOptions) (*Reached, error) {
	start := time.Now()
	if o.Timeout <= 0 {
		o.Timeout = time.Hour
	}
	uid, gid, err := Owner(pgdata)
	if err != nil {
		return nil, err
	}
	logFile := o.LogFile
	if logFile == "" {
		logFile = LogPath(pgdata)
		if err := os.MkdirAll(filepath.Dir(logFile), 0o700); err != nil {
			return nil, fmt.Errorf("the server log's directory: %w", err)
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(filepath.Dir(logFile), int(uid), int(gid)); err != nil {
				return nil, fmt.Errorf("the server log's directory: %w", err)
			}
		}
	} else if logFile, err = filepath.Abs(logFile); err != nil {
		return nil, err
	}
	// pg_ctl -w notices a postmaster that dies at start (a bad setting); with
	// shutdown as the target action the server never accepts connections,
	// so there only -W (no wait) works.
	wait := []string{"-w", "-t", strconv.Itoa(int(o.Timeout.Seconds()))}
	if o.Action == "shutdown" {
		wait = []string{"-W"}
	}
	args := append([]string{"-D", pgdata, "-l", logFile}, append(wait, "start")...)
	opts := ""
	if o.Port > 0 {
		opts += fmt.Sprintf(" -p %d", o.Port)
	}
	if o.Socket != "" {
		opts += " -k " + shellQuote(o.Socket)
	}
	for _, kv := range o.Settings {
		opts += " -c " + shellQuote(kv)
	}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(o.BinDir, "pg_ctl"), args...)
	if err := pgctl.AsOwner(cmd, pgdata); err != nil {
		return nil, err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_ctl start: %v\n%s%s", err, out, logTail(logFile))
	}
	p, s, pidErr := pidFileAddress(ctx, pgdata)
	port := o.Port
	sock := o.Socket
	if pidErr != nil && o.Action != "shutdown" {
		return nil, fmt.Errorf("%w; see %s%s", pidErr, logFile, logTail(logFile))
	}
	if port == 0 {
		port = p
	}
	if sock == "" {
		sock = s
	}
	deadline := time.Now().Add(o.Timeout)
	for {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("recovery did not reach its target within %s; see %s%s", o.Timeout, logFile, logTail(logFile))
		}
		if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
			if o.Action == "shutdown" {
				return withPartial(pgdata, &Reached{State: "shut down", Seconds: time.Since(start).Seconds()})
			}
			return nil, fmt.Errorf("the server stopped during recovery; see %s%s", logFile, logTail(logFile))
		}
		r, err := probe(ctx, sock, port, o.Action)
		if err == nil && r != nil {
			r.Seconds = time.Since(start).Seconds()
			return withPartial(pgdata, r)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// withPartial adds to r the stream partial wal-fetch recorded serving to
// the recovery of pgdata.
func withPartial(pgdata string, r *Reached) (*Reached, error) {
	u, err := walship.ReadPartialRecord(pgdata)
	if err != nil {
		return nil, fmt.Errorf("reading what stream partial recovery used: %w", err)
	}
	r.Partial = u
	return r, nil
}

// shellQuote quotes s for the shell pg_ctl starts the postmaster with
// (its -o options are pasted into a /bin/sh command line).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// pidFileAddress waits for postmaster.pid and reads the port and socket
// directory from it (lines: pid, datadir, start time, port, socket dir, ...).
func pidFileAddress(ctx context.Context, pgdata string) (int, string, error) {
	for i := 0; i < 300; i++ {
		b, err := os.ReadFile(filepath.Join(pgdata, pgctl.PIDFile))
		if err == nil {
			if port, socket, ok := pgctl.ParseAddress(b); ok {
				return port, socket, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return 0, "", errors.New("postmaster.pid does not name a port")
}

// probe returns where recovery is once it reached the state action leads to.
func probe(ctx context.Context, sock string, port int, action string) (*Reached, error) {
	host := sock
	if host == "" {
		host = "127.0.0.1"
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", host, port))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var pause, lsn, last string
	err = conn.QueryRow(cctx, `SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END,
		coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text, ''),
		coalesce(pg_last_xact_replay_timestamp()::text, '')`).Scan(&inRecovery, &pause, &lsn, &last)
	if err != nil {
		return nil, err
	}
	switch {
	case !inRecovery:
		return &Reached{State: "promoted", LSN: lsn, LastXact: last}, nil
	case pause == "paused":
		return &Reached{State: "paused", LSN: lsn, LastXact: last}, nil
	}
	return nil, nil
}

// logTail is the end of the server's log for an error message: the reason
// PostgreSQL gave is almost always in its last lines.
func logTail(logFile string) string {
	b, err := os.ReadFile(logFile)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\nlast lines of " + logFile + ":\n  " + strings.Join(lines, "\n  ")
}
