// Package duration reads and writes durations the way operators write
// retention and windows: Go's form (90m, 1h30m) extended with d (day),
// w (week) and y (365 days) leading it: 7d, 12w, 7y, 1d12h. The backup
// policy (coordinator/policy) and expiry (agent/expire) share it, so that
// a value one accepts the other reads the same.
package duration
