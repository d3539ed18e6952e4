// Package backup takes, lists and verifies base backups, and holds the
// backup manifest format that restore reads.
//
// A backup is taken on a running cluster with non-exclusive
// pg_backup_start/pg_backup_stop on one dedicated connection. Files are read
// by this (co-located) process in parallel, each compressed and encrypted on
// the way out (pkg/objstream) and written to every repository. The
// backup_label and tablespace_map returned by pg_backup_stop are stored in
// the manifest byte for byte and never written into the live data directory.
//
// # Change detection: page-level for relation data, whole files otherwise
//
// Differential (changes since the last full) and incremental (changes since
// the last backup of any type) backups are page-level for the main fork of
// relation files: a page is stored when its LSN is at or after the parent's
// start LSN, or when it is new (all zero / uninitialized); every other page
// is taken, at restore, from the parent chain. This is correct under
// concurrent writes because every change made after the parent's start
// carries an LSN at or after it, and any page torn by a write during this
// backup is rewritten by WAL replay from this backup's start (full-page
// images are forced on during a backup). Pages are never trusted where LSNs
// are not maintained: free-space-map and visibility-map forks (visibility-map
// bits are cleared without an LSN change), init forks and every non-relation
// file are stored whole in every backup. The parent must be held, with its
// chain, by every repository the backup goes to, and end (stop LSN) at or
// before this backup's start LSN: otherwise a standby behind the parent
// would record as unchanged pages it has not replayed yet, and restore
// would write the parent's newer copies (see startBackup). A parent on
// another timeline, or no parent meeting these, makes the backup a full
// one, the reason recorded in the manifest (type_reason).
//
// # Backup IDs
//
// An ID is the UTC second plus the type letter, reserved in every
// repository before anything is written under it (reserveID), so that two
// backups never share one and a failed backup's clean-up removes only its
// own objects.
//
// # Repository layout
//
//	<cluster>/backup/<id>/pgdata/<path>   one object per stored file (full content, or delta pages)
//	<cluster>/backup/<id>/backup.manifest written last: the backup exists only once it is there
//	<cluster>/backup/<second>.reserved/<random>  the ID's reservation while the backup runs
//
// The manifest is compressed and checksummed but not encrypted, so that hosts
// holding only public recipients can list backups and take incrementals: it
// holds paths, sizes, checksums, LSNs and the backup_label, no table data.
// A delta object's plaintext is a sequence of (uint32 big-endian block
// number, 8192-byte page) records in block order.
package backup
