package orders

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/pgdr/pgdr/agent/health"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/wal"
)

// demote stops the local primary cleanly for a planned switchover: a
// CHECKPOINT first (so the shutdown checkpoint has little left to write),
// then `pg_ctl stop -m fast -w`. A fast shutdown disconnects every session
// at once (never smart: open sessions must not go on committing), writes
// the shutdown checkpoint and lets the WAL senders send all of it before
// the postmaster exits, so a streaming replica ends up with every commit.
//
// It does not write the fenced marker: a cleanly stopped primary rejoins as
// a replica without pg_rewind. Nor does the lease loop fence it: it
// classifies a node whose postmaster is not running as not a primary and
// stops renewing (CheckNow below makes the report say so at once).
//
// The output names the shutdown checkpoint, read from pg_controldata, and
// the end of its WAL record; the coordinator promotes the target only once
// the target has received WAL up to that end:
//
//	demoted: ... shutdown_checkpoint_lsn=0/3000060 shutdown_checkpoint_end_lsn=0/30000D2 timeline=1
func (x *Executor) demote(ctx context.Context, epoch uint64, reason string) (string, error) {
	pgdata := x.cfg.Postgres.PGData
	if fi, err := health.ReadFenced(pgdata); fi != nil {
		return "", fmt.Errorf("refusing to demote: this node is fenced (%s, epoch %d; marker %s, %v)", fi.Reason, fi.Epoch, health.FencedPath(pgdata), err)
	}
	if !pgctl.PostmasterRunning(pgdata) {
		return "", errors.New("refusing to demote: PostgreSQL is not running here (nothing to stop cleanly; this is not a working primary)")
	}
	conn, inRecovery, err := x.pg.ConnRecovery(ctx)
	if err != nil {
		return "", err
	}
	if inRecovery {
		conn.Close(context.WithoutCancel(ctx))
		return "", errors.New("refusing to demote: the server is in recovery (a replica, not the primary)")
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		x.log.Warn("demote: checkpoint before the shutdown", "err", err)
	}
	conn.Close(context.WithoutCancel(ctx))

	if reason == "" {
		reason = "no reason given"
	}
	x.log.Warn("DEMOTING PostgreSQL: clean stop (fast shutdown) for a switchover", "reason", reason, "epoch", epoch)
	// The stop outlives a daemon shutdown that begins meanwhile.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoteStopTimeout)
	defer cancel()
	stopErr := x.pg.StopMode(sctx, pgctl.Fast, demoteStopTimeout-5*time.Second)
	if stopErr != nil && pgctl.PostmasterRunning(pgdata) {
		// It must not stay half up: stop it for sure, and say that the
		// stop was not clean (no shutdown checkpoint to wait for).
		err := x.pg.Stop(sctx)
		x.monitor.CheckNow(ctx)
		return "", fmt.Errorf("the fast shutdown did not finish (%v); PostgreSQL was stopped harder (%v), so there is no clean shutdown checkpoint: do not switch over, fail over instead", stopErr, err)
	}
	x.monitor.CheckNow(ctx)
	out, err := x.pg.Run(sctx, "pg_controldata", "-D", pgdata)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL stopped, but reading pg_controldata failed: %w", err)
	}
	cd, err := parseShutdownCheckpoint(out)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL stopped, but %w", err)
	}
	return fmt.Sprintf("demoted: PostgreSQL stopped cleanly (fast shutdown) shutdown_checkpoint_lsn=%s shutdown_checkpoint_end_lsn=%s timeline=%d",
		wal.LSN(cd.checkpoint), wal.LSN(cd.end), cd.timeline), nil
}

// shutdownCheckpoint is what pg_controldata says of a cleanly stopped server.
type shutdownCheckpoint struct {
	checkpoint, end uint64
	timeline        uint64
}

// Sizes for the end of a shutdown checkpoint's WAL record: the record
// header (SizeOfXLogRecord, 24), the short data header (2) and the
// CheckPoint struct (88 bytes in PostgreSQL 12 to 17), plus a page header
// for every page boundary it crosses (24, or 40 at a segment's start).
const (
	// demoteStopTimeout bounds the clean stop (pg_ctl's own -t is 5s less).
	demoteStopTimeout   = 90 * time.Second
	checkpointRecordLen = 24 + 2 + 88
	shortPageHeaderLen  = 24
	longPageHeaderLen   = 40
)

var controlField = func(out, name string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*?)\s*$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// parseShutdownCheckpoint reads pg_controldata's output of a cleanly shut
// down cluster.
func parseShutdownCheckpoint(out string) (shutdownCheckpoint, error) {
	var cd shutdownCheckpoint
	if st := controlField(out, "Database cluster state"); st != "shut down" {
		return cd, fmt.Errorf("pg_controldata says the cluster state is %q, not \"shut down\": the stop was not clean", st)
	}
	lsn, err := wal.ParseLSN(controlField(out, "Latest checkpoint location"))
	if err != nil {
		return cd, fmt.Errorf("pg_controldata: Latest checkpoint location: %w", err)
	}
	cd.checkpoint = uint64(lsn)
	cd.timeline, _ = strconv.ParseUint(controlField(out, "Latest checkpoint's TimeLineID"), 10, 32)
	blk, _ := strconv.ParseUint(controlField(out, "WAL block size"), 10, 64)
	seg, _ := strconv.ParseUint(controlField(out, "Bytes per WAL segment"), 10, 64)
	if blk == 0 {
		blk = 8192
	}
	if seg == 0 {
		seg = 16 << 20
	}
	cd.end = recordEnd(uint64(lsn), checkpointRecordLen, blk, seg)
	return cd, nil
}

// recordEnd is where a WAL record of n bytes starting at start ends, page
// headers included.
func recordEnd(start, n, blk, seg uint64) uint64 {
	pos := start
	for n > 0 {
		pageEnd := (pos/blk + 1) * blk
		take := min(n, pageEnd-pos)
		pos += take
		n -= take
		if n > 0 {
			if pageEnd%seg == 0 {
				pos = pageEnd + longPageHeaderLen
			} else {
				pos = pageEnd + shortPageHeaderLen
			}
		}
	}
	return pos
}

// restartMargin: a restart is refused with less than this left before
// its deadline (on either clock).
const restartMargin = time.Second

// restart starts PostgreSQL again as it is on disk: the undo of a demote
// when a switchover is aborted before anything was promoted. On a former
// primary that makes it writable, so right before, as before pg_promote,
// the leader must confirm that it still records this node as the primary
// at epoch and that the order's deadline has not passed on its clock
// (confirmCurrent): a restart that arrives after the leader gave up on
// it, or after a failover chose another primary, leaves PostgreSQL
// stopped. A fenced node is never restarted (it may have lost the primary
// role); a running one is left alone.
func (x *Executor) restart(ctx context.Context, epoch uint64, timing orderTiming) (string, error) {
	pgdata := x.cfg.Postgres.PGData
	if fi, err := health.ReadFenced(pgdata); fi != nil {
		return "", fmt.Errorf("refusing to restart: this node is fenced (%s, epoch %d; marker %s, %v)", fi.Reason, fi.Epoch, health.FencedPath(pgdata), err)
	}
	if pgctl.PostmasterRunning(pgdata) {
		return "PostgreSQL is already running", nil
	}
	cur, err := x.confirmCurrent(ctx, "restart", epoch, timing)
	if err != nil {
		return "", err
	}
	if cur.hasLocal && cur.local < restartMargin {
		return "", fmt.Errorf("%w: restart at epoch %d: %s left before the order's deadline by this agent's clock once the leader confirmed the epoch; PostgreSQL left stopped",
			ErrOrderExpired, epoch, cur.local.Round(time.Millisecond))
	}
	if cur.hasLeader && cur.leader < restartMargin {
		return "", fmt.Errorf("%w: restart at epoch %d: %s left %s; PostgreSQL left stopped",
			ErrOrderExpired, epoch, cur.leader.Round(time.Millisecond), cur.leaderHow(timing))
	}
	if err := x.pg.Start(ctx); err != nil {
		return "", fmt.Errorf("restart: %w", err)
	}
	x.monitor.CheckNow(ctx)
	return "restarted: PostgreSQL started again", nil
}
