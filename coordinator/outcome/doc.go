// Package outcome tells a write the coordinators never submitted apart
// from one whose outcome is unknown, so that a client retries only the
// first: pgdrctl promises that a write is never sent twice.
package outcome
