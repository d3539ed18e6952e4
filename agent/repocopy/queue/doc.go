// Package queue is the durable, on-disk queue of objects still to copy into
// one async repository (see agent/repocopy).
//
// A queue is a directory (<agent.state_dir>/repocopy/<repository>/) with
// one small file per entry, written to a temporary name, fsynced and
// renamed into place, so that any process may add entries at any time: the
// daemon, and wal-push run as archive_command without the daemon. An entry
// is removed only once its copy is verified, so a crash or a restart loses
// nothing; an entry added twice is copied twice at worst (copies are
// idempotent).
//
// File names order the queue and carry what the lag needs without reading
// the files:
//
//	<time, Unix ns, 20 digits>-<key hash, 16 hex>-<bytes>-<objects>.q
//
// time is when the object was written to the sync repositories (or found
// missing by a reconcile), so listing the directory gives the oldest
// first. A file whose name or content cannot be read is reported (ErrCorrupt,
// naming the file) and left on disk, renamed *.corrupt by Quarantine, never
// deleted; the copier's reconcile then finds whatever it stood for.
package queue
