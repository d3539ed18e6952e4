// Package daemon is `pgdr-agent run`: the long-lived agent next to one
// PostgreSQL server. For now it owns WAL shipping: it keeps one Shipper (so
// repository connections stay warm), pushes ready WAL segments ahead of
// archive_command, and serves one-shot commands that hand their work to it
// over a local unix socket (Client), so no process start-up or connection
// set-up is paid per segment. Without the daemon the one-shot commands work
// alone.
package daemon
