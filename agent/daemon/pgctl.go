package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/agent/restore"
)

// pgCommand runs one of PostgreSQL's programs (from postgres.bindir) as
// the data directory's owner when the agent runs as root: PostgreSQL
// refuses root, and files it writes must stay the server's.
func (d *Daemon) pgCommand(ctx context.Context, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.cfg.Postgres.BinDir, bin), args...)
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	if os.Geteuid() == 0 {
		uid, gid, err := restore.Owner(d.cfg.Postgres.PGData)
		if err != nil {
			return nil, err
		}
		if uid != 0 {
			cred, err := restore.Credential(uid, gid)
			if err != nil {
				return nil, err
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
	}
	return cmd, nil
}

// runPG runs a PostgreSQL program and returns its combined output.
func (d *Daemon) runPG(ctx context.Context, bin string, args ...string) (string, error) {
	cmd, err := d.pgCommand(ctx, bin, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		// Arguments may hold a connection string with a password
		// (pg_rewind --source-server): never put one in an error.
		shown := make([]string, len(args))
		for i, a := range args {
			shown[i] = a
			if l := strings.ToLower(a); strings.Contains(l, "password=") || (strings.Contains(l, "://") && strings.Contains(l, "@")) {
				if shown[i] = withoutPassword(a); shown[i] == "" {
					shown[i] = "<connection string hidden>"
				}
			}
		}
		return string(out), fmt.Errorf("%s %s: %v: %s", bin, strings.Join(shown, " "), err, tailString(string(out), 1500))
	}
	return string(out), nil
}

// chownLikePGData gives a file the data directory's owner (when root).
func (d *Daemon) chownLikePGData(path string) {
	if os.Geteuid() != 0 {
		return
	}
	if uid, gid, err := restore.Owner(d.cfg.Postgres.PGData); err == nil {
		os.Chown(path, int(uid), int(gid))
	}
}

func tailString(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// postmasterRunning reports whether postmaster.pid names a live process.
func postmasterRunning(pgdata string) bool {
	b, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// stopPostgres stops the server with a fast shutdown (never smart: a
// smart shutdown lets open sessions go on committing), escalating to
// immediate if the fast one does not finish. A server that is not
// running is not an error.
func (d *Daemon) stopPostgres(ctx context.Context) error {
	pgdata := d.cfg.Postgres.PGData
	if !postmasterRunning(pgdata) {
		return nil
	}
	_, err := d.runPG(ctx, "pg_ctl", "stop", "-D", pgdata, "-m", "fast", "-w", "-t", "60")
	if err == nil || !postmasterRunning(pgdata) {
		return nil
	}
	d.log.Error("fast shutdown did not finish; shutting down immediately", "err", err)
	if _, err2 := d.runPG(ctx, "pg_ctl", "stop", "-D", pgdata, "-m", "immediate", "-w", "-t", "60"); err2 != nil && postmasterRunning(pgdata) {
		return errors.Join(err, err2)
	}
	return nil
}

// startPostgres starts the server and waits until it accepts connections.
func (d *Daemon) startPostgres(ctx context.Context) error {
	pgdata := d.cfg.Postgres.PGData
	logFile := filepath.Join(filepath.Dir(pgdata), filepath.Base(pgdata)+".pgdr.log")
	_, err := d.runPG(ctx, "pg_ctl", "start", "-D", pgdata, "-l", logFile, "-w", "-t", "300")
	if err != nil {
		return fmt.Errorf("%w (server log: %s)", err, logFile)
	}
	return nil
}

// localConn connects to the local server (postgres.dsn).
func (d *Daemon) localConn(ctx context.Context) (*pgx.Conn, error) {
	return connectDSN(ctx, d.cfg.Postgres.DSN, "postgres.dsn")
}

// localConnRecovery connects to the local server and reports whether it is
// in recovery: the first step of every order that depends on the role.
func (d *Daemon) localConnRecovery(ctx context.Context) (*pgx.Conn, bool, error) {
	conn, err := d.localConn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("connecting to the local server: %w", err)
	}
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, err
	}
	return conn, inRecovery, nil
}

func connectDSN(ctx context.Context, dsn, what string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s does not parse", what) // the error may quote a password
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = 10 * time.Second
	}
	pc.RuntimeParams["application_name"] = "pgdr-agent"
	pc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, pc)
}
