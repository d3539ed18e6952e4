// Package repocopy fills the async repositories (repos[].mode: async) from
// the sync ones, in the agent daemon.
//
// Writers (wal-push, backups) write only to the sync repositories and then
// add an entry to each async repository's durable queue (agent/repocopy/queue,
// under agent.state_dir): one per WAL object, one per backup. The copier
// works each queue oldest first, copy_concurrency entries at a time, and
// removes an entry only once its copy is verified: every object is read back
// from the async repository and its size and SHA-256 compared with what was
// read from the sync one; a copy that differs is deleted and tried again.
// A backup is copied data objects first and manifest last, so it exists in
// the async repository (restore, backup-verify) only once complete; its
// parent chain and the WAL from its start to its stop segment are copied
// before its manifest too. While
// the async repository fails, the copier backs off (1 s doubling to a
// minute) and retries the oldest entries; an entry whose copy fails waits
// out its own backoff, so it does not hold up the queue behind it.
// Archiving and backups go on in the sync repositories meanwhile.
//
// The queue is the fast path; a periodic reconcile is the safety net: it
// lists the cluster's objects in the first reachable sync repository and in
// the async one together (two sorted listings merged, so memory does not
// grow with the bucket) and queues what is missing or of another size —
// the cluster record, pins, and anything a writer could not queue (a
// queue directory not writable, a corrupt queue file). It runs when the
// daemon starts, after a queue file was found corrupt, and every
// reconcile interval (10 minutes), so its listing cost is two listings of
// the cluster per interval.
//
// Only what the sync repository holds is copied: an entry whose object is
// gone from every sync repository (expired, or removed by wal-repair) is
// dropped, a backup whose manifest is gone from them (expiry deletes the
// manifest first) is not copied, and reservations and expiry's in-progress
// records are never copied. Expiry itself runs per repository, async ones
// included (agent/expire), by the same rules.
//
// Lag (objects, bytes and age of the oldest entry still queued) is served
// per repository by Status (the daemon's /status) and as the metrics
// pgdr_repo_copy_lag_objects, pgdr_repo_copy_lag_bytes and
// pgdr_repo_copy_oldest_missing_seconds.
package repocopy
