// Package health owns the agent's local checks of its PostgreSQL server
// and what they mean for routing. A Checker runs one round of checks
// (postmaster alive, connection and SELECT 1, recovery state, LSNs, lag,
// timeline, archiver failures, free disk, identity) on a reused connection
// and returns a pgdrv1.HealthReport that records every failure in Error
// while keeping whatever did work. Status is the pure decision from a report
// to the HTTP status of /health, /ready, /primary and /replica.
package health
