package health

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/pkg/syncnames"
	"github.com/pgdr/pgdr/pkg/wal"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// replicationSQL reads the primary's walsenders. Rows of walsenders that
// have not reported a position yet keep NULL LSNs (reported as 0).
const replicationSQL = `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
	sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text
	FROM pg_stat_replication ORDER BY application_name, pid`

// replication fills what a primary reports for synchronous replication:
// its synchronous_standby_names as the server uses it now, and one
// ReplicaState per walsender (pg_stat_replication). The coordinator leader
// relies on both to change the synchronous standbys safely. The user needs
// pg_monitor (or superuser) to see other users' walsenders' positions.
//
// With lease-gated commits (Config.CommitGate, agent/commitgate) the
// server's own setting names the gate alone and the coordinator's value
// is in commitgate.RequestedGUC: the report shows that value, leaves the
// gate's walsender out, and gives each walsender the sync_state the
// coordinator's value gives it (PostgreSQL's rule, pkg/syncnames), so
// that the coordinator sees the setting it asked for and the standbys it
// made synchronous.
func (c *Checker) replication(q *querier, r *pgdrv1.HealthReport) {
	var ssn, requested string
	if !q.row("synchronous_standby_names", "SELECT current_setting('synchronous_standby_names'), coalesce(current_setting('"+commitgate.RequestedGUC+"', true), '')", &ssn, &requested) {
		return
	}
	gate := c.cfg.CommitGate
	gated := gate != "" && commitgate.IsGate(ssn, gate)
	if gated {
		ssn = requested
	}
	r.SynchronousStandbyNames = ssn
	if q.c.conn == nil {
		return
	}
	rows, err := q.c.conn.Query(q.ctx, replicationSQL)
	if err != nil {
		q.failed("pg_stat_replication", err)
		return
	}
	var out []*pgdrv1.ReplicaState
	var scanErr error
	for rows.Next() && scanErr == nil {
		var rs pgdrv1.ReplicaState
		var sent, write, flush, replay *string
		if scanErr = rows.Scan(&rs.ApplicationName, &rs.State, &rs.SyncState, &sent, &write, &flush, &replay); scanErr != nil {
			break
		}
		rs.SentLsn, rs.WriteLsn, rs.FlushLsn, rs.ReplayLsn = lsnOrZero(sent), lsnOrZero(write), lsnOrZero(flush), lsnOrZero(replay)
		if gate != "" && strings.EqualFold(rs.ApplicationName, gate) {
			continue // the commit gate is no standby
		}
		out = append(out, &rs)
	}
	rows.Close()
	if err := errors.Join(scanErr, rows.Err()); err != nil {
		q.failed("pg_stat_replication", err)
		return
	}
	if gated {
		set, _ := syncnames.Parse(ssn)
		ws := make([]syncnames.Walsender, len(out))
		for i, rs := range out {
			ws[i] = syncnames.Walsender{Name: rs.ApplicationName, State: rs.State, Flush: rs.FlushLsn}
		}
		for i, st := range syncnames.States(set, ws) {
			out[i].SyncState = st
		}
	}
	r.Replicas = out
}

// lsnOrZero parses PostgreSQL's LSN text; NULL or unparsable is 0.
func lsnOrZero(s *string) uint64 {
	if s == nil {
		return 0
	}
	l, err := wal.ParseLSN(*s)
	if err != nil {
		return 0
	}
	return uint64(l)
}

// newestWALTimeline is the highest timeline of the WAL segment files in
// walDir (0 when there are none). A replica's WAL receiver writes a
// timeline's segments only once recovery follows that timeline, so the
// replica holds WAL of it and promoting it keeps that timeline's commits
// (pg_control shows the timeline of the last restartpoint, which on a
// replica whose primary died may be several promotions old). Recycled
// segments are named on the timeline being replayed, never a newer one.
func newestWALTimeline(walDir string) (uint32, error) {
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return 0, fmt.Errorf("listing %s: %w", walDir, err)
	}
	var newest uint32
	for _, e := range entries {
		name := e.Name()
		if len(name) != 24 || !e.Type().IsRegular() {
			continue
		}
		tli, err := strconv.ParseUint(name[:8], 16, 32)
		if err != nil {
			continue
		}
		if _, err := strconv.ParseUint(name[8:], 16, 64); err != nil {
			continue
		}
		newest = max(newest, uint32(tli))
	}
	return newest, nil
}

// replicaTimeline is the timeline a replica reports: once its WAL receiver
// stops (its primary died), pg_stat_wal_receiver is empty and only the
// last restartpoint's timeline is left, which can be several promotions
// old. A replica never goes back to an older timeline, so the highest one
// seen streamed since the agent started is kept (per system identifier:
// a data directory copied afresh from another cluster starts over). tli is
// this round's value.
func (c *Checker) replicaTimeline(sysid uint64, tli uint32) uint32 {
	if sysid != c.recvSysid {
		c.recvSysid, c.recvTLI = sysid, 0
	}
	c.recvTLI = max(c.recvTLI, tli)
	return c.recvTLI
}
