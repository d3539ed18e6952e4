package heartbeat

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdr/pgdr/agent/health"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// Table is the heartbeat's table: one row, upserted.
const Table = "pgdr.heartbeat"

const (
	createSQL = `CREATE SCHEMA IF NOT EXISTS pgdr;
CREATE TABLE IF NOT EXISTS pgdr.heartbeat (
	id int PRIMARY KEY CHECK (id = 1),
	at timestamptz NOT NULL,
	node text NOT NULL
);
COMMENT ON TABLE pgdr.heartbeat IS 'pgdr write-availability heartbeat: committed by the primary''s agent every heartbeat.interval (docs/slo.md)'`
	upsertSQL = `INSERT INTO pgdr.heartbeat (id, at, node) VALUES (1, clock_timestamp(), $1)
ON CONFLICT (id) DO UPDATE SET at = excluded.at, node = excluded.node RETURNING at`
)

// syncCancelled starts PostgreSQL's warning when a commit's wait for
// synchronous standbys is cancelled (statement_timeout, or a cancel
// request): the commit is local only.
const syncCancelled = "canceling wait for synchronous replication"

// Config is the writer's part of the agent's configuration.
type Config struct {
	// DSN reaches the local server (postgres.dsn).
	DSN    string
	Node   string
	PGData string
	// Interval between two heartbeats (heartbeat.interval).
	Interval time.Duration
}

// Timeout bounds one heartbeat (statement_timeout; the context allows a
// second more): long enough for a loaded server, short enough that the
// next heartbeat is not held up by more than a few intervals.
func (c Config) Timeout() time.Duration {
	return min(max(2*c.Interval, time.Second), 5*time.Second)
}

// Deps is what the writer reads from the rest of the agent.
type Deps struct {
	// Report is the latest health report (nil: none yet).
	Report func() *pgdrv1.HealthReport
	Log    *slog.Logger
}

// Writer commits the heartbeat while its server is a writable primary.
type Writer struct {
	cfg  Config
	deps Deps

	mu sync.Mutex
	// last: the commit time of the last acknowledged heartbeat (zero: none
	// since the writer started or since the server stopped being a
	// writable primary).
	last time.Time
	// runStart: the commit time of the first heartbeat of the run that
	// ends at last: no whole second between two of its commits was
	// without one.
	runStart time.Time

	// conn and ready are used by Run's goroutine only.
	conn  *pgx.Conn
	ready bool // the table exists on conn's server
	// cancelled is set by conn's notice handler during a heartbeat.
	cancelled bool
	// retryAfter: no heartbeat is tried before (the role lacked a
	// privilege); deniedErr: the last such error logged.
	retryAfter time.Time
	deniedErr  string
}

// New returns a writer; Run writes.
func New(cfg Config, deps Deps) *Writer {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Writer{cfg: cfg, deps: deps}
}

// Interval is the configured heartbeat interval.
func (w *Writer) Interval() time.Duration { return w.cfg.Interval }

// Last is the commit time of the last acknowledged heartbeat (zero: none)
// and of the first of its run (see runStart).
func (w *Writer) Last() (last, runStart time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.runStart
}

// Run writes a heartbeat every interval until ctx ends. A heartbeat that
// takes longer than an interval delays the next one (ticks are dropped,
// never queued).
func (w *Writer) Run(ctx context.Context) {
	defer w.close()
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Beat(ctx)
		}
	}
}

// Beat writes one heartbeat if the server is a writable primary; it
// returns whether one was committed and acknowledged.
func (w *Writer) Beat(ctx context.Context) bool {
	if !w.writable() {
		w.forget()
		return false
	}
	at, err := w.write(ctx)
	if err != nil {
		w.deps.Log.Debug("heartbeat not committed", "table", Table, "err", err)
		return false
	}
	w.mu.Lock()
	if at.After(w.last) {
		if w.last.IsZero() || at.Sub(w.last)-w.cfg.Interval >= time.Second {
			w.runStart = at
		}
		w.last = at
	}
	w.mu.Unlock()
	return true
}

// writable: the latest report shows a connectable primary that is not
// fenced, and there is no fenced marker now.
func (w *Writer) writable() bool {
	r := w.deps.Report()
	if r == nil || !r.GetConnectable() || r.GetInRecovery() || r.GetRecoveryUnknown() || r.GetFenced() {
		return false
	}
	if fi, err := health.ReadFenced(w.cfg.PGData); fi != nil || err != nil {
		return false
	}
	return true
}

// forget drops the last heartbeat: a server no longer a writable primary
// reports what its table holds instead.
func (w *Writer) forget() {
	w.mu.Lock()
	w.last, w.runStart = time.Time{}, time.Time{}
	w.mu.Unlock()
}

func (w *Writer) write(ctx context.Context) (time.Time, error) {
	if time.Now().Before(w.retryAfter) {
		return time.Time{}, errors.New("the agent's role lacks a privilege on " + Table + "; retried at " + w.retryAfter.Format(time.RFC3339))
	}
	timeout := w.cfg.Timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
	defer cancel()
	if err := w.connect(ctx, timeout); err != nil {
		return time.Time{}, err
	}
	if !w.ready {
		if err := w.create(ctx); err != nil {
			return time.Time{}, err
		}
		w.ready = true
	}
	w.cancelled = false
	var at time.Time
	if err := w.conn.QueryRow(ctx, upsertSQL, w.cfg.Node).Scan(&at); err != nil {
		w.failed(err)
		w.denied(err)
		return time.Time{}, err
	}
	w.deniedErr = ""
	if w.cancelled {
		return time.Time{}, errors.New("committed locally only: the wait for synchronous standbys was cancelled")
	}
	return at, nil
}

// deniedRetry: how long the heartbeat waits after the agent's role was
// refused a privilege on the table (it may not create schemas in the
// database, or was not granted the table), instead of an error in the
// server's log every interval.
const deniedRetry = time.Minute

// create makes sure the table exists: only when it does not is it
// created, since CREATE SCHEMA IF NOT EXISTS checks the right to create
// schemas in the database before it looks for the schema, and a role
// without it writes into a table a DBA created and granted (docs/slo.md).
func (w *Writer) create(ctx context.Context) error {
	var exists bool
	err := w.conn.QueryRow(ctx, "SELECT to_regclass('"+Table+"') IS NOT NULL").Scan(&exists)
	if err == nil && !exists {
		_, err = w.conn.Exec(ctx, createSQL)
	}
	if err != nil {
		w.failed(err)
		w.denied(err)
	}
	return err
}

// denied holds the heartbeat back for deniedRetry after a privilege
// error, logged once per distinct message.
func (w *Writer) denied(err error) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // insufficient_privilege
		return
	}
	w.retryAfter = time.Now().Add(deniedRetry)
	if pgErr.Message != w.deniedErr {
		w.deniedErr = pgErr.Message
		w.deps.Log.Warn("no write-availability heartbeat: the agent's role may not create or write "+Table+"; create it and grant the role USAGE on schema pgdr and SELECT, INSERT, UPDATE on the table (docs/slo.md)",
			"err", pgErr.Message, "retry_in", deniedRetry)
	}
}

func (w *Writer) connect(ctx context.Context, timeout time.Duration) error {
	if w.conn != nil && !w.conn.IsClosed() {
		return nil
	}
	w.conn, w.ready = nil, false
	pc, err := pgx.ParseConfig(w.cfg.DSN)
	if err != nil {
		return errors.New("postgres.dsn does not parse") // pgx may quote the password
	}
	if pc.ConnectTimeout == 0 || pc.ConnectTimeout > timeout {
		pc.ConnectTimeout = timeout
	}
	pc.RuntimeParams["application_name"] = "pgdr-agent heartbeat"
	ms := strconv.FormatInt(timeout.Milliseconds(), 10)
	pc.RuntimeParams["statement_timeout"] = ms
	pc.RuntimeParams["lock_timeout"] = ms
	pc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	pc.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if strings.HasPrefix(n.Message, syncCancelled) {
			w.cancelled = true
		}
	}
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return err
	}
	w.conn = conn
	return nil
}

// failed drops the connection unless the server answered with an SQL
// error on a healthy one (read-only after a demotion, say).
func (w *Writer) failed(err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && !w.conn.IsClosed() {
		if pgErr.Code == "42P01" || pgErr.Code == "3F000" { // the table or schema was dropped
			w.ready = false
		}
		return
	}
	w.close()
}

func (w *Writer) close() {
	if w.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = w.conn.Close(ctx)
		w.conn = nil
	}
}
