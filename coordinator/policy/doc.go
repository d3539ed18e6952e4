// Package policy owns a cluster's backup policy: the tiers (name, type,
// cron schedule and time zone, retention, repositories, where a run goes,
// timeout) and the PITR window, their defaults, their validation (every
// error names the field, as tiers[2].schedule), the YAML file form read by
// `pgdrctl policy apply -f`, the conversion to and from the replicated
// pgdrv1.BackupPolicy, and Due: the pure decision of which tiers the
// scheduler must run now. Nothing here does I/O.
package policy
