package health

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// heartbeat fills the newest write-availability heartbeat the server
// holds (agent/heartbeat): on a primary whose agent writes them, the last
// acknowledged one (no query); elsewhere the replayed row of
// pgdr.heartbeat, one row by primary key. Its absence is not a failure
// (heartbeats off, or none replicated yet): the report just carries none,
// and a failed read is logged, never recorded in Error, so that the
// heartbeat cannot make a healthy server look unhealthy.
func (c *Checker) heartbeat(q *querier, r *pgdrv1.HealthReport) {
	if !r.InRecovery && c.cfg.Heartbeat != nil {
		last, runStart, interval := c.cfg.Heartbeat()
		r.HeartbeatIntervalMs = interval.Milliseconds()
		setHeartbeat(r, last)
		if !last.IsZero() && !runStart.IsZero() {
			r.HeartbeatRunMs = max(last.Sub(runStart).Milliseconds(), 0)
		}
		return
	}
	if q.c.conn == nil || time.Now().Before(c.heartbeatRetry) {
		return
	}
	var pgErr *pgconn.PgError
	if !c.heartbeatTable {
		// Until the table exists, ask the catalog: reading a missing table
		// would log an error in the server's log every round.
		var exists bool
		if err := c.conn.QueryRow(q.ctx, "SELECT to_regclass('pgdr.heartbeat') IS NOT NULL").Scan(&exists); err != nil || !exists {
			if errors.As(err, &pgErr) && pgErr.Code == "42501" {
				c.heartbeatDenied(pgErr)
			}
			return
		}
		c.heartbeatTable = true
	}
	var at time.Time
	err := c.conn.QueryRow(q.ctx, "SELECT at FROM pgdr.heartbeat WHERE id = 1").Scan(&at)
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		c.heartbeatDenied(pgErr)
	case errors.Is(err, pgx.ErrNoRows):
	case errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"):
		c.heartbeatTable = false // dropped
	case err != nil:
		c.log.Debug("heartbeat not read", "table", "pgdr.heartbeat", "err", err)
	default:
		setHeartbeat(r, at)
	}
}

// heartbeatRetryAfter: how long the heartbeat is not read after the
// agent's role was refused it (not granted USAGE on schema pgdr or SELECT
// on the table): an error in the server's log every round otherwise.
const heartbeatRetryAfter = time.Minute

func (c *Checker) heartbeatDenied(err *pgconn.PgError) {
	c.heartbeatRetry = time.Now().Add(heartbeatRetryAfter)
	c.log.Warn("heartbeat not read: the agent's role may not read pgdr.heartbeat; grant it USAGE on schema pgdr and SELECT on the table (docs/slo.md)",
		"err", err.Message, "retry_in", heartbeatRetryAfter)
}

// setHeartbeat records at (zero: none) and its age at the report's time.
func setHeartbeat(r *pgdrv1.HealthReport, at time.Time) {
	if at.IsZero() {
		return
	}
	r.HeartbeatTime = timestamppb.New(at)
	r.HeartbeatAgeMs = max(r.GetTime().AsTime().Sub(at).Milliseconds(), 0)
}
