package health

import (
	"errors"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// slotsSQL reads the server's replication slots and the WAL each keeps:
// from restart_lsn to the current LSN on a primary, to the last replayed
// LSN on a replica.
const slotsSQL = `SELECT slot_name::text, slot_type, active, coalesce(restart_lsn::text, ''), coalesce(wal_status, ''),
	coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint
	FROM pg_replication_slots ORDER BY slot_name`

// slots fills the report's replication slots. A failure to read them is
// logged, not reported as a failed check: slots do not make a server
// unhealthy, and ReplicationSlotsKnown stays false so that nothing is
// decided on an empty list.
func (c *Checker) slots(q *querier, r *pgdrv1.HealthReport) {
	if q.c.conn == nil {
		return
	}
	rows, err := q.c.conn.Query(q.ctx, slotsSQL)
	if err != nil {
		c.log.Debug("reading pg_replication_slots", "err", err)
		return
	}
	var out []*pgdrv1.ReplicationSlot
	var scanErr error
	for rows.Next() && scanErr == nil {
		var s pgdrv1.ReplicationSlot
		var restart string
		var retained int64
		if scanErr = rows.Scan(&s.Name, &s.Type, &s.Active, &restart, &s.WalStatus, &retained); scanErr != nil {
			break
		}
		s.RestartLsn = lsnOrZero(&restart)
		s.RetainedBytes = uint64(max(retained, 0))
		out = append(out, &s)
	}
	rows.Close()
	if err := errors.Join(scanErr, rows.Err()); err != nil {
		c.log.Debug("reading pg_replication_slots", "err", err)
		return
	}
	r.ReplicationSlots, r.ReplicationSlotsKnown = out, true
}
