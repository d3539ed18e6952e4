// Package expire decides and carries out backup and WAL retention for one
// repository: which backups and archived WAL files can go, and why every
// other one stays.
//
// The decision (plan.go, Decide) is a pure function of the repository's
// backups, the names of its archived WAL files, the retention rules and
// the current time: no I/O, table-tested. Its rules, in order of strength:
//
//   - a pinned backup is never expired, nor is the newest full backup;
//   - a backup is kept while a kept backup depends on it (its diff/incr
//     chain back to the full);
//   - the PITR window stays restorable: the newest backup that starts at or
//     before now − window (or the oldest one, when none does) is kept, and
//     so is all WAL after its start;
//   - WAL is kept from the start of the oldest backup kept by a rule, on
//     every timeline it may need (timeline history followed only when the
//     history file is signed and verified; without one the timeline is
//     assumed reachable, which keeps more); every kept backup keeps at
//     least the WAL from its start to its stop (consistency);
//   - a backup whose manifest is not trusted (unsigned where signing is
//     configured) is never expired and never counted against a rule, so a
//     forged manifest cannot push a real backup out of its tier.
//
// Execution (run.go, Run) deletes manifest first: the manifests (the
// objects that make backups exist) of the expired backups go one by one, a
// child before its parent, and only then their data objects and the WAL,
// together and in parallel, so an interrupted run leaves no backup that
// looks complete but lacks data or WAL. Data objects left without a manifest (an
// interrupted expiry, a crashed backup) are removed by a later run once
// they are older than a grace period and no fresh reservation holds their
// ID, so a backup being written now is never touched.
//
// A backup running during expiry may build on any backup, so while a
// reservation is fresh no backup is expired; one reserved after the run's
// listing is caught by a check before each manifest is deleted (the run
// stops, before any WAL), and backup.Take checks its parent chain again
// before writing its manifest, so a chain broken in between fails the
// backup instead of recording it.
//
// Pins (pin.go) are small signed objects under <cluster>/pins/, written to
// every repository; a pin found in any repository pins the backup in all
// of them, and an unreadable or unsigned pin still pins (a forged pin can
// only keep more).
package expire
