// Package reclone re-clones a former primary that cannot rejoin by
// pg_rewind (neither data checksums nor wal_log_hints, or pg_rewind
// failed): Recloner.Reclone, which the rejoin order calls.
//
// The old data directory is renamed aside to
// <pgdata>.pgdr-old-<UTC time> in the same parent (atomic: nothing copied
// or deleted) and an empty one takes its place. It is filled with
// pg_basebackup from the new primary or, when that copy fails (the primary
// refuses replication connections, has no WAL sender free, cannot be
// reached), with the latest backup from the agent's repositories, restored
// with no recovery target and only when a trusted key signed its
// manifest. The node's own configuration files go back over the copy's,
// the recovery settings are written as the rewind path writes them
// (restore_command too after a restore: recovery from a backup cannot do
// without the archive), the fence is cleared, and the server starts as a
// replica: streaming from the new primary or, after a restore, at least
// replaying the archive (the output says which). If neither copy can be
// made the old directory is renamed back, and the error names the three
// failures (rewind, copy, restore).
//
// # What it owns
//
// Moving the data directory aside and back (moveAside, restoreAside),
// refusing a directory it cannot move (copyable: a mount point, or
// tablespaces), the fresh copy (pg_basebackup through agent/pgctl), the
// restore of the latest backup (agent/restore) and the restore_command it
// needs, carrying the fenced marker into the copy, putting the node's
// configuration files back, and the wait for a restored replica.
//
// It does not own the recovery settings, the wait for streaming, the fence
// or the health checks: the orders, the lease and the monitor do, and each
// arrives as a func in Deps, so this package imports none of them (nor
// agent/daemon).
//
// # What it must never do
//
// Never delete, overwrite or empty the old data directory: it may hold
// the only copy of commits the new primary never got, and only an operator
// removes it. Never put anything but a complete copy (pg_basebackup
// finished without an error, or a restore that verified its backup) in
// the data directory's place: on any failure before then the partial copy
// is dropped and the old directory is renamed back. Never start the
// server writable: it is started only after the standby settings
// (standby.signal, primary_conninfo) are written, the fenced marker stays
// carried into the copy, and nothing here promotes it. Never act on a
// running server: PostgreSQL must be stopped first. Never quote the
// primary's DSN (it may hold a password) in an error.
package reclone
