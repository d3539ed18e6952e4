package pgctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/fsutil"
)

// Time limits pg_ctl is given (its -t) when Config leaves them zero.
const (
	DefaultStopTimeout  = 60 * time.Second
	DefaultStartTimeout = 300 * time.Second
)

// Shutdown modes of pg_ctl stop. Never smart: a smart shutdown lets open
// sessions go on committing.
const (
	Fast      = "fast"
	Immediate = "immediate"
)

// Config is what a Controller needs of the agent's configuration.
type Config struct {
	BinDir string // postgres.bindir: where pg_ctl and the other programs are
	PGData string // postgres.pgdata
	DSN    string // postgres.dsn: the local server, for Conn
	Log    *slog.Logger

	StopTimeout  time.Duration // pg_ctl stop -t in Stop (0: DefaultStopTimeout)
	StartTimeout time.Duration // pg_ctl start -t in Start (0: DefaultStartTimeout)
}

// Controller runs PostgreSQL's programs on one data directory. It holds
// no state but its Config; its methods are safe for concurrent use.
type Controller struct {
	cfg Config
}

// New returns a Controller for cfg.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	return &Controller{cfg: cfg}
}

// PGData is the data directory the Controller acts on.
func (c *Controller) PGData() string { return c.cfg.PGData }

// LogFile is where Start has the server write its log: beside the data
// directory, as <pgdata>.pgdr.log.
func (c *Controller) LogFile() string {
	return filepath.Join(filepath.Dir(c.cfg.PGData), filepath.Base(c.cfg.PGData)+".pgdr.log")
}

// AsOwner makes cmd run as the owner of pgdata (user, group and
// supplementary groups) when the agent runs as root and the owner is not
// root: PostgreSQL refuses root, and files its programs write must stay
// the server's. As any other user it leaves cmd alone.
func AsOwner(cmd *exec.Cmd, pgdata string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	o, err := fsutil.OwnerOf(pgdata)
	if err != nil {
		return err
	}
	if o.UID == 0 {
		return nil
	}
	cred, err := Credential(uint32(o.UID), uint32(o.GID))
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return nil
}

// Command returns one of PostgreSQL's programs (from BinDir), ready to
// run as the data directory's owner (AsOwner), in "/" (the owner may not
// be able to enter the agent's working directory).
func (c *Controller) Command(ctx context.Context, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.cfg.BinDir, bin), args...)
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	if err := AsOwner(cmd, c.cfg.PGData); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Run runs one of PostgreSQL's programs (Command) and returns its combined
// output. Its error names the program, its arguments — with any password
// in a connection string (pg_rewind --source-server) removed — and the end
// of its output.
func (c *Controller) Run(ctx context.Context, bin string, args ...string) (string, error) {
	cmd, err := c.Command(ctx, bin, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		shown := make([]string, len(args))
		for i, a := range args {
			shown[i] = a
			if l := strings.ToLower(a); strings.Contains(l, "password=") || (strings.Contains(l, "://") && strings.Contains(l, "@")) {
				if shown[i] = conninfo.WithoutPassword(a); shown[i] == "" {
					shown[i] = "<connection string hidden>"
				}
			}
		}
		return string(out), fmt.Errorf("%s %s: %v: %s", bin, strings.Join(shown, " "), err, Tail(string(out), 1500))
	}
	return string(out), nil
}

// ChownLikePGData gives a file the data directory's owner (when root),
// for files the agent writes into it. It is best effort: a file it cannot
// give away stays root's.
func (c *Controller) ChownLikePGData(path string) {
	if os.Geteuid() != 0 {
		return
	}
	if o, err := fsutil.OwnerOf(c.cfg.PGData); err == nil {
		os.Chown(path, o.UID, o.GID)
	}
}

// Tail is the end of a program's output, at most n bytes of it after
// trimming space, marked with "..." when cut.
func Tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Running reports whether the data directory's postmaster.pid names a
// live process.
func (c *Controller) Running() bool { return PostmasterRunning(c.cfg.PGData) }

// StopMode runs `pg_ctl stop -m mode -w -t timeout` once: no check
// before, no escalation after.
func (c *Controller) StopMode(ctx context.Context, mode string, timeout time.Duration) error {
	_, err := c.Run(ctx, "pg_ctl", "stop", "-D", c.cfg.PGData, "-m", mode, "-w", "-t", strconv.Itoa(int(timeout.Seconds())))
	return err
}

// Stop stops the server with a fast shutdown, escalating to immediate if
// the fast one does not finish. A server that is not running is not an
// error.
func (c *Controller) Stop(ctx context.Context) error {
	if !c.Running() {
		return nil
	}
	err := c.StopMode(ctx, Fast, c.cfg.StopTimeout)
	if err == nil || !c.Running() {
		return nil
	}
	c.cfg.Log.Error("fast shutdown did not finish; shutting down immediately", "err", err)
	if err2 := c.StopMode(ctx, Immediate, c.cfg.StopTimeout); err2 != nil && c.Running() {
		return errors.Join(err, err2)
	}
	return nil
}

// Start starts the server (pg_ctl start, logging to LogFile) and waits
// until it accepts connections.
func (c *Controller) Start(ctx context.Context) error {
	logFile := c.LogFile()
	_, err := c.Run(ctx, "pg_ctl", "start", "-D", c.cfg.PGData, "-l", logFile, "-w", "-t", strconv.Itoa(int(c.cfg.StartTimeout.Seconds())))
	if err != nil {
		return fmt.Errorf("%w (server log: %s)", err, logFile)
	}
	return nil
}

// Conn connects to the local server (postgres.dsn).
func (c *Controller) Conn(ctx context.Context) (*pgx.Conn, error) {
	return Connect(ctx, c.cfg.DSN, "postgres.dsn")
}

// ConnRecovery connects to the local server and reports whether it is in
// recovery: the first step of every order that depends on the role.
func (c *Controller) ConnRecovery(ctx context.Context) (*pgx.Conn, bool, error) {
	conn, err := c.Conn(ctx)
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

// Connect connects to dsn as the agent (application_name pgdr-agent,
// simple protocol, 10s to connect unless the DSN says otherwise). what
// names the DSN in the error when it does not parse: the parser's own
// error may quote a password.
func Connect(ctx context.Context, dsn, what string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s does not parse", what)
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = 10 * time.Second
	}
	pc.RuntimeParams["application_name"] = "pgdr-agent"
	pc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, pc)
}
