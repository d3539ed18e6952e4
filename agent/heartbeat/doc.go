// Package heartbeat is the write-availability heartbeat on the agent.
//
// # What it owns
//
// The writer (Writer.Run): while its server is a writable primary (the
// latest report says connected, not in recovery, not fenced, and no
// fenced marker is in the data directory), it commits one row in
// pgdr.heartbeat every heartbeat.interval (creating the schema and table
// when missing) on a connection of its own, and remembers the commit time
// (the primary's clock_timestamp()) of the last heartbeat whose commit
// was acknowledged (Writer.Last): with synchronous replication, only once
// the standbys confirmed it, as for any client; and the first commit of
// the run it ends (no whole second without a commit), which lets a new
// coordinator leader count the seconds no leader judged. On a primary the
// health report carries Last; elsewhere agent/health reads the replayed
// row.
//
// # What it must never do
//
// Never block or slow the health loop, the lease or fencing: it runs in
// its own goroutine with its own connection, each heartbeat bounded by
// statement_timeout and a context deadline, and a heartbeat stuck waiting
// for a synchronous standby holds up only the next heartbeat. Never write
// while fenced or on a server in recovery. Never count a commit whose
// wait for synchronous standbys was cancelled (PostgreSQL's "canceling
// wait for synchronous replication" warning) as acknowledged: writes were
// not available to clients then.
package heartbeat
