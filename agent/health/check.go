package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// DefaultTimeout bounds one round of checks when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Config is what a Checker needs to know about its server.
type Config struct {
	Cluster string
	Node    string
	PGData  string
	// DSN reaches the local server. Its user needs pg_monitor (or superuser)
	// to read the WAL receiver's state.
	DSN string
	// Timeout bounds one round of checks (connecting included).
	Timeout time.Duration
	// Repos are the configured repositories: a primary's report carries
	// the archive RPO of each (none without).
	Repos []RepoRef
	// CopyLag, when set, returns the async repositories' copy backlog
	// (agent/repocopy); it must be cheap (no repository listing).
	CopyLag func() []CopyLag
	// Heartbeat, when this agent writes heartbeats (agent/heartbeat),
	// returns the commit time of its last acknowledged one (zero: none),
	// of the first of its unbroken run, and its interval: a primary
	// reports those instead of reading its table. Nil: heartbeat disabled.
	Heartbeat func() (last, runStart time.Time, interval time.Duration)
	// ReceiverSlot is the WAL receiver's slot ("" without a receiver),
	// carried in every report.
	ReceiverSlot string
	// CommitGate is the commit gate's application_name with lease-gated
	// commits on (agent/commitgate), "" with them off: see replication.
	CommitGate string
}

// ConfigFrom takes a Checker's settings from the agent's configuration.
func ConfigFrom(c *config.Config) Config {
	out := Config{Cluster: c.Cluster, Node: c.Node.Name, PGData: c.Postgres.PGData, DSN: c.Postgres.DSN}
	if c.WAL.Receive.Enabled {
		out.ReceiverSlot = c.WAL.Receive.Slot
	}
	if c.Failover.LeaseGatedCommits.On() {
		out.CommitGate = commitgate.DefaultAppName
	}
	for _, r := range c.Repos {
		mode := r.Mode
		if mode == "" {
			mode = config.ModeSync
		}
		out.Repos = append(out.Repos, RepoRef{Name: r.Name, Mode: mode})
	}
	return out
}

// Checker runs the local checks. It keeps one connection open between
// rounds and reconnects when it breaks. It is safe for concurrent use;
// rounds are serialized.
type Checker struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	conn *pgx.Conn
	// heartbeatTable: pgdr.heartbeat was seen on the server (heartbeat.go).
	heartbeatTable bool
	// heartbeatRetry: the agent's role was refused the table; it is not
	// read again before (heartbeat.go).
	heartbeatRetry time.Time
	// recvTLI: the highest timeline seen streamed (see replicaTimeline).
	recvTLI   uint32
	recvSysid uint64

	// archMu guards arch, the archiver's state as the latest round saw
	// it (read by the metrics at scrape time, never waiting for a round).
	archMu sync.Mutex
	arch   Archiver
}

// Archiver is what the latest round saw of WAL archiving: the server's
// last successful archive (zero when nothing was archived since the
// statistics were reset, or unknown) and the segments waiting for
// archive_command (.ready files), the oldest of which was marked ready at
// OldestReady (zero when none waits). Known is false until a round read
// them.
type Archiver struct {
	Known        bool
	LastArchived time.Time
	Ready        int
	OldestReady  time.Time
}

// Archiver returns what the latest round saw of WAL archiving.
func (c *Checker) Archiver() Archiver {
	c.archMu.Lock()
	defer c.archMu.Unlock()
	return c.arch
}

// NewChecker returns a Checker; it connects on the first Check.
func NewChecker(cfg Config, log *slog.Logger) *Checker {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Checker{cfg: cfg, log: log}
}

// Close closes the connection, if any. The Checker stays usable: the next
// Check connects again.
func (c *Checker) Close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropConn(ctx)
}

func (c *Checker) dropConn(ctx context.Context) error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close(ctx)
	c.conn = nil
	return err
}

// Check runs one round of checks. It always returns a report: every check
// that failed is named in Error, and the fields it would have filled keep
// their zero values.
func (c *Checker) Check(ctx context.Context) *pgdrv1.HealthReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	r := &pgdrv1.HealthReport{Cluster: c.cfg.Cluster, Node: c.cfg.Node, Time: timestamppb.Now(), ReceiverSlot: c.cfg.ReceiverSlot}
	var errs []string
	fail := func(what string, err error) {
		errs = append(errs, what+": "+err.Error())
	}
	defer func() { r.Error = strings.Join(errs, "; ") }()

	if fi, err := ReadFenced(c.cfg.PGData); fi != nil {
		r.Fenced = true
		if err != nil {
			fail("fenced marker", err)
		}
	}
	alive, err := postmasterAlive(c.cfg.PGData)
	r.PostmasterAlive = alive
	if err != nil {
		fail("postmaster", err)
	}
	if free, err := freeBytes(c.cfg.PGData); err != nil {
		fail("free space of PGDATA", err)
	} else {
		r.PgdataFreeBytes = free
	}
	// statfs follows a pg_wal symlink to the file system that holds WAL.
	if free, err := freeBytes(filepath.Join(c.cfg.PGData, "pg_wal")); err != nil {
		fail("free space of pg_wal", err)
	} else {
		r.PgwalFreeBytes = free
	}

	// A kept connection may have died with a restart since the last round:
	// then connect again at once rather than report the server down.
	reused := c.conn != nil && !c.conn.IsClosed()
	if err := c.connect(ctx); err != nil {
		fail("connect", err)
		return r
	}
	q := &querier{c: c, ctx: ctx, fail: fail}
	var one int
	if err := c.conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		if !reused {
			q.failed("SELECT 1", err)
			return r
		}
		c.log.Debug("kept connection broken; reconnecting", "err", err)
		c.dropConn(ctx)
		if err := c.connect(ctx); err != nil {
			fail("connect", err)
			return r
		}
		if !q.row("SELECT 1", "SELECT 1", &one) {
			return r
		}
	}
	r.Connectable = true

	var sysid int64
	var inRecovery bool
	if !q.row("server identity", "SELECT pg_is_in_recovery(), current_setting('server_version'), (SELECT system_identifier FROM pg_control_system())",
		&inRecovery, &r.PgVersion, &sysid) {
		// Connectable, yet whether it is a replica is not known: a false
		// InRecovery would read as "writable" (and a healthy replica
		// could fence itself on it), so the report says unknown.
		r.RecoveryUnknown = true
		return r
	}
	r.InRecovery, r.SystemIdentifier = inRecovery, uint64(sysid)

	if r.InRecovery {
		c.replica(q, r)
	} else {
		// The timeline of the WAL being inserted: right after a promotion it
		// is already the new one, while pg_control_checkpoint() still shows
		// the old one until the next checkpoint.
		var lsn, file string
		if q.row("current LSN", "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())", &lsn, &file) {
			if l, err := wal.ParseLSN(lsn); err != nil {
				fail("current LSN", err)
			} else {
				r.CurrentLsn = uint64(l)
			}
			if tli, err := strconv.ParseUint(file[:min(8, len(file))], 16, 32); err != nil {
				fail("timeline", fmt.Errorf("WAL file name %q: %w", file, err))
			} else {
				r.Timeline = uint32(tli)
			}
		}
		c.replication(q, r)
	}

	c.slots(q, r)
	c.heartbeat(q, r)

	var failedWAL string
	var failedAt, archivedAt *time.Time
	var failed int64
	arch := Archiver{}
	if q.row("pg_stat_archiver", "SELECT failed_count, coalesce(last_failed_wal, ''), last_failed_time, last_archived_time FROM pg_stat_archiver", &failed, &failedWAL, &failedAt, &archivedAt) {
		r.ArchiveFailedCount = uint64(failed)
		r.ArchiveLastFailedWal = failedWAL
		if failedAt != nil {
			r.ArchiveLastFailedTime = timestamppb.New(*failedAt)
		}
		if archivedAt != nil {
			arch.LastArchived = *archivedAt
		}
		arch.Known = true
	}
	oldest, count, err := readyBacklog(c.cfg.PGData)
	if err != nil {
		fail("archive status", err)
		arch.Known = false
	} else {
		arch.Ready = count
		if oldest != "" {
			if fi, err := os.Stat(filepath.Join(c.cfg.PGData, "pg_wal", "archive_status", oldest+".ready")); err == nil {
				arch.OldestReady = fi.ModTime()
			}
		}
	}
	c.archMu.Lock()
	c.arch = arch
	c.archMu.Unlock()
	if err == nil && !r.InRecovery && r.CurrentLsn > 0 && len(c.cfg.Repos) > 0 {
		c.archiveRPO(q, r, oldest, count)
	}
	return r
}

// archiveRPO fills the primary's archive RPO per repository from what the
// archiver already knows: pg_stat_archiver, the .ready backlog and the
// copier's queue. Nothing is listed in any repository.
func (c *Checker) archiveRPO(q *querier, r *pgdrv1.HealthReport, oldest string, count int) {
	var lastArchived *time.Time
	var started time.Time
	var segSize int64
	if !q.row("archive RPO", `SELECT last_archived_time, pg_postmaster_start_time(), (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size') FROM pg_stat_archiver`,
		&lastArchived, &started, &segSize) {
		return
	}
	st := ArchiverState{Now: time.Now(), CurrentLSN: r.CurrentLsn, SegmentSize: uint64(segSize), OldestReady: oldest, ReadyCount: count, Started: started}
	if lastArchived != nil {
		st.LastArchived = *lastArchived
	}
	var lags []CopyLag
	if c.cfg.CopyLag != nil {
		lags = c.cfg.CopyLag()
	}
	r.ArchiveRpo = ArchiveRPO(st, c.cfg.Repos, lags)
}

// replica fills what a server in recovery reports: received and replayed
// LSNs, lag, the WAL receiver's state and the timeline.
func (c *Checker) replica(q *querier, r *pgdrv1.HealthReport) {
	var recv, replay *string
	var lagSeconds float64
	var ctlTLI int64
	if !q.row("recovery progress", `SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		CASE WHEN pg_last_wal_receive_lsn() IS NOT NULL AND pg_last_wal_receive_lsn() <> pg_last_wal_replay_lsn()
			THEN coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 0) ELSE 0 END,
		(SELECT timeline_id FROM pg_control_checkpoint())::int8`,
		&recv, &replay, &lagSeconds, &ctlTLI) {
		return
	}
	parse := func(what string, s *string) uint64 {
		if s == nil {
			return 0
		}
		l, err := wal.ParseLSN(*s)
		if err != nil {
			q.fail(what, err)
		}
		return uint64(l)
	}
	r.ReceiveLsn = parse("receive LSN", recv)
	r.ReplayLsn = parse("replay LSN", replay)
	r.CurrentLsn = r.ReplayLsn
	if r.ReceiveLsn > r.ReplayLsn {
		r.LagBytes = int64(r.ReceiveLsn - r.ReplayLsn)
	}
	r.LagSeconds = max(lagSeconds, 0)
	r.Timeline = uint32(ctlTLI)

	// Without pg_monitor the receiver's row shows only its pid: status and
	// received_tli are NULL, and the replica is reported as not streaming.
	var status *string
	var recvTLI *int64
	rows, err := q.c.conn.Query(q.ctx, "SELECT status, received_tli::int8 FROM pg_stat_wal_receiver")
	if err != nil {
		q.failed("pg_stat_wal_receiver", err)
		return
	}
	var scanErr error
	for rows.Next() && scanErr == nil {
		scanErr = rows.Scan(&status, &recvTLI)
	}
	rows.Close()
	if err := errors.Join(scanErr, rows.Err()); err != nil {
		q.failed("pg_stat_wal_receiver", err)
		return
	}
	r.Streaming = status != nil && *status == "streaming"
	if recvTLI != nil && *recvTLI > 0 {
		r.Timeline = uint32(*recvTLI)
	}
	if !r.Streaming {
		// The receiver's timeline is gone with it: what pg_wal holds says
		// which timeline's WAL this replica received.
		if tli, err := newestWALTimeline(filepath.Join(c.cfg.PGData, "pg_wal")); err != nil {
			q.fail("timeline of pg_wal", err)
		} else {
			r.Timeline = max(r.Timeline, tli)
		}
	}
	r.Timeline = c.replicaTimeline(r.SystemIdentifier, r.Timeline)
}

// querier runs the queries of one round, recording failures and dropping
// the connection when a failure leaves it unusable.
type querier struct {
	c    *Checker
	ctx  context.Context
	fail func(what string, err error)
}

// row scans one row; on failure it records what failed and returns false.
func (q *querier) row(what, sql string, dest ...any) bool {
	if q.c.conn == nil {
		q.fail(what, errors.New("no connection"))
		return false
	}
	if err := q.c.conn.QueryRow(q.ctx, sql).Scan(dest...); err != nil {
		q.failed(what, err)
		return false
	}
	return true
}

// failed records err and drops the connection unless the server answered
// with an SQL error on a healthy connection (a missing privilege, say).
func (q *querier) failed(what string, err error) {
	q.fail(what, err)
	var pgErr *pgconn.PgError
	if q.c.conn != nil && (!errors.As(err, &pgErr) || q.c.conn.IsClosed() || q.ctx.Err() != nil) {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		q.c.dropConn(closeCtx)
	}
}

func (c *Checker) connect(ctx context.Context) error {
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	c.conn = nil
	if strings.TrimSpace(c.cfg.DSN) == "" {
		return errors.New("postgres.dsn is empty")
	}
	pc, err := pgx.ParseConfig(c.cfg.DSN)
	if err != nil {
		// pgx's parse errors may quote the DSN, password included.
		return errors.New("postgres.dsn does not parse")
	}
	if pc.ConnectTimeout == 0 || pc.ConnectTimeout > c.cfg.Timeout {
		pc.ConnectTimeout = c.cfg.Timeout
	}
	pc.RuntimeParams["application_name"] = "pgdr-agent health"
	// Simple protocol: no prepared statements to go stale across a restart.
	pc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return err
	}
	c.conn = conn
	return nil
}

// postmasterAlive reports whether postmaster.pid names a live process. A
// missing file means the server is stopped (not an error).
func postmasterAlive(pgdata string) (bool, error) {
	pid, err := pgctl.ReadPID(pgdata)
	if errors.Is(err, os.ErrNotExist) {
		return false, errors.New("not running (no postmaster.pid)")
	}
	if err != nil {
		return false, err
	}
	if !pgctl.ProcessAlive(pid) {
		return false, fmt.Errorf("process %d from postmaster.pid is not running (stale file)", pid)
	}
	// After a crash the pid may have been reused by an unrelated program.
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
		if name := strings.TrimSpace(string(comm)); !strings.HasPrefix(name, "postgres") && !strings.HasPrefix(name, "postmaster") {
			return false, fmt.Errorf("process %d from postmaster.pid is %q, not PostgreSQL (stale file)", pid, name)
		}
	}
	return true, nil
}

// freeBytes is the space available to unprivileged users on path's file
// system (what PostgreSQL, not root, can still write).
func freeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
