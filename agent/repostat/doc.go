// Package repostat reads what the agent's repositories hold, on an
// interval, for the daemon's pgdr_repo_* metrics: per repository, the
// complete backups by tier and type (from their manifests) and the newest
// WAL segment of the newest timeline. The figures come from the
// repositories themselves, so they stay true for backups taken by hand, by
// another node or before the daemon restarted.
//
// Reading is incremental: a manifest is read once per backup (its header
// is kept), and after the first round's listing of the WAL prefix a round
// lists only the newest segment's WAL log and the next one, and looks for
// newer timelines (skipped ones included): never the whole WAL archive,
// unless the newest segment it remembers is gone. Backup IDs come from
// listing the backups' directories (one directory read in a file
// repository; on S3 a ListObjectsV2 with delimiter per 1000 backups) and a
// look for each manifest (a HEAD on S3): a backup's data objects are never
// listed.
package repostat
