// Package tiername owns what a backup policy tier's name may be. The
// name is written into the manifests of the tier's backups and is how
// expiry rules them (pgdr-agent expire --keep-tier NAME=...), so the
// policy (coordinator/policy), the agent's backup orders
// (agent/backuprun) and its command line (pgdr-agent backup --tier,
// expire --keep-tier) share this one rule: a name one accepts, the
// others accept too.
package tiername
