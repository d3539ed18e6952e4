// Package restore restores a base backup (resolving its full → diff/incr
// chain) into an empty data directory and configures point-in-time
// recovery: files are written in parallel, each verified against its
// checksum and fsynced (by a separate pool of syncers, so that decoding goes
// on while the disk catches up; all before the restore goes further), then
// their directories; backup_label and
// tablespace_map are written from the manifest (the tablespace_map
// rewritten when tablespaces are relocated, tablespace.go, so that recovery
// links pg_tblspc to the new locations); recovery.signal and the
// recovery settings (restore_command = pgdr-agent wal-fetch, the target)
// go into postgresql.auto.conf. Every check that can fail — the backup, the
// chain, the target against the backup and the archive, the identity, the
// target directory — runs before anything is written. A named restore point
// is looked up in the archived WAL (restorepoint.go, with pkg/wal's record
// reader) to pick the backup that reaches it and to refuse one that cannot.
package restore
