// Package divergence makes the divergence report of a former primary:
// before the rejoin order rewinds it (pg_rewind) or replaces its data
// directory with a fresh copy, the agent reads its own WAL from the point
// where the new primary's timeline forked off its own (the switch point
// the new timeline's history file gives for this node's timeline) to the
// end of its valid WAL, and records what would otherwise be thrown away:
// the LSN range, its size, and every transaction that committed in it
// (xid, commit time, the relations it changed by relfilenode and, resolved
// through the new primary's catalogs, OID and name, with the rows
// inserted, updated and deleted per relation). Aborted transactions and
// ones still in progress at the end of the WAL are counted, not listed.
// A replica given a rejoin order (down during the failover, or ahead of
// the promoted node) reports nothing when its WAL ends at or before the
// fork, and otherwise a report of status "replica": transactions it
// received, which the old primary committed, not lost commits of its own.
//
// # What it owns
//
// Reading the range (Read, on pkg/wal's record reader and its XACT and
// heap decoders), finding the fork point (Fork: the new primary's
// timeline history, read with pg_read_binary_file as pg_rewind does),
// naming the relations (Resolve: pg_class of each database on the new
// primary, where a relation that existed before the fork has the same
// relfilenode), storing the report (JSON) and the raw WAL segments that
// hold the range in every repository under
// <cluster>/divergence/<id>/ (compressed, encrypted and signed like WAL
// objects: Store), reading a stored report back (Load), and the bounded
// summary the rejoin order returns to the coordinator (Summary), which
// records it in the cluster's history and on the failover's incident.
//
// # What it must never do
//
// Never report zero transactions for a node it could not read: a data
// directory that is gone, WAL that is missing at the fork point or a new
// primary that cannot say where it forked all give the status "unknown"
// with the error. Never block or fail the rejoin: Make returns a report
// whatever happens, bounded in time, and the rejoin goes on. Never write
// into the data directory (it only reads pg_wal and runs pg_controldata).
package divergence
