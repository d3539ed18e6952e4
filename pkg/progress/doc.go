// Package progress prints the progress of a long operation (a backup, a
// restore) as plain lines: what, percent, bytes done of the total, rate
// and the estimated time left, every few seconds while it runs and once
// more when it ends. Lines, not a redrawn bar, so that they read the same
// on a terminal, in a log file and in journald.
package progress
