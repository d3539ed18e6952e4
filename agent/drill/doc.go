// Package drill runs a restore drill on the agent: it restores a backup
// (agent/restore) into a scratch directory, starts PostgreSQL there on a
// free 127.0.0.1 port with a configuration that cannot reach production
// (no archiving, no primary_conninfo, no synchronous standbys, a unix
// socket and pg_hba.conf of its own in the scratch directory), lets
// recovery replay to the target and promote, runs the checks —
// pg_amcheck --heapallindexed on every database, the operator's SQL checks
// with their expected values, per-table row counts (compared with the
// source's where the source can tell) — then stops the server and deletes
// the scratch copy, on failure and cancellation too, unless asked to keep it.
//
// Run measures the restore's file phase (fetch and write), WAL replay and
// the checks (RTO evidence) and the age of the newest replayed commit
// against the target (RPO evidence). It returns an error only when the
// drill cannot begin (bad options, a refused scratch path, no such
// backup): then nothing was created. Once begun, the outcome, passed or
// failed with its reason, is in the Result, which marshals to the JSON
// that `pgdr-agent drill --json` prints and a coordinator order carries.
package drill
