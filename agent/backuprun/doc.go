// Package backuprun carries out the backups the coordinator leader's
// scheduler orders (AgentCommand.backup, proto/pgdr/v1/backup_run.proto):
// it owns the backup runs of this node, one at a time.
//
// # What it owns
//
// Runner.Start answers an order at once: pending (accepted: the backup
// runs in the background), the state of the run when the order repeats a
// run id this node already has (pending while it runs, its result once it
// ended), or a refusal with the reason (another run in progress, an
// unknown type or repository, no timeout, or an order whose budget to
// start passed while it waited for its turn: StartAt). The backup itself is
// backup.Take, as `pgdr-agent backup --tier` calls it (Taker), into the
// repositories the order names (all of the agent's when it names none).
// When it ends, the run's result (CommandResult with backup: the backup's
// id and sizes, ok, or the error) completes the order's command id
// through the Completer (the coordinator session), retried with backoff
// until it is taken or the Runner's context ends: the session may be down
// when the backup ends. The last Deps.Remember runs are remembered with
// their results, to answer repeats.
//
// At the order's timeout_ms, counted from its arrival on this node,
// the backup's context is cancelled: backup.Take then removes what it
// wrote and releases its ID's reservation, so no manifest is left and
// the backup does not exist; the run completes with a timeout error once
// Take has returned, never before: a clean-up longer than
// Deps.CleanupGrace is logged, and reported when it ended, so that the
// leader does not start the cluster's next backup on another node while
// this one still removes what it wrote (the leader's own grace, cancel
// order and clean-up deadline bound its wait). The run holds the node
// until Take has returned.
//
// Every answer names its run (BackupReport.run_id) and, for a refusal
// before the start (busy, expired, stopping), says not_started, so that
// the leader does not count it as the tier's run of its slot. The final
// answer carries the type actually taken (a full when an incr or diff had
// no usable parent).
//
// A cancel order (Backup.cancel) cancels a running backup as its timeout
// does and is answered pending, the run completing once cleaned up; a
// cancel for a run this node does not have remembers it as cancelled so
// it never starts later.
//
// After a successful backup, the retention the order carries (each
// tier's rules, the PITR window) is applied by Deps.Expire (Expirer:
// agent/expire.Run as `pgdr-agent expire` calls it) on the order's
// repositories; what it removed, or its error, is in the final answer. A
// failed expiry does not fail the backup.
//
// # What it must never do
//
// Never run two backups at once on this node; never carry a run id out
// twice (a repeat is answered, not run: within the remembered runs of
// this agent process); never let a backup outlive its timeout_ms by more
// than its clean-up; never report a backup as taken unless backup.Take
// returned its manifest, nor as failed when it did.
package backuprun
