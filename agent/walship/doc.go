// Package walship ships WAL: it pushes the files PostgreSQL's archive_command
// hands it to every repository (durably, compressed and encrypted, refusing
// to overwrite different content, and refusing a file in pg_wal that
// PostgreSQL has not marked ready), pushes further ready segments ahead in
// parallel and remembers them so later archive_command calls return at once,
// fetches files back for restore_command (with prefetch of the next
// segments, each fsynced and checked before it is served) — the Shipper; lists
// and verifies what the archive holds (Lister); and repairs a conflicting
// archived copy when the operator confirms it was never complete
// (Repairer). Lister and Repairer come from a Shipper and share its
// repositories and the keys it loaded.
//
// Exit-status contract used by the CLI: Fetch returns an error wrapping
// ErrNotInArchive only when every repository answered that the file is not
// there; any other failure means the file may exist but cannot be read, and
// recovery must abort rather than end early.
package walship
