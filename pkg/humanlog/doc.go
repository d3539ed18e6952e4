// Package humanlog is a log/slog handler for a person at a terminal: one
// plain line per record ("pgdr-agent backup: backup failed: <error>"),
// without the key=value quoting and escaped newlines that the text format
// uses for log collectors. Daemons and --json output keep slog's formats.
package humanlog
