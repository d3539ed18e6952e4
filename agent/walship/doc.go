// Package walship ships WAL: it pushes the files PostgreSQL's archive_command
// hands it to every repository (durably, compressed and encrypted, refusing
// to overwrite different content, and refusing a file in pg_wal that
// PostgreSQL has not marked ready), pushes further ready segments ahead in
// parallel and remembers them so later archive_command calls return at once,
// fetches files back for restore_command (with prefetch of the next
// segments, each fsynced and checked before it is served), lists and
// verifies what the archive holds, and repairs a conflicting archived copy
// (Inspect, Repair) when the operator confirms it was never complete.
//
// Exit-status contract used by the CLI: Fetch returns an error wrapping
// ErrNotInArchive only when every repository answered that the file is not
// there; any other failure means the file may exist but cannot be read, and
// recovery must abort rather than end early.
package walship
