// Package daemon is `pgdr-agent run`: the long-lived agent next to one
// PostgreSQL server.
//
// It ships WAL: it keeps one Shipper (so repository connections stay warm),
// pushes ready WAL segments ahead of archive_command, and serves one-shot
// commands that hand their work to it over a local unix socket
// (agent/agentsock), so no process start-up or connection set-up is paid
// per segment. Without the daemon the one-shot commands work alone.
//
// It watches the server: a round of agent/health checks every
// health.interval, whose latest report answers the HTTP probes (/health,
// /ready, /primary, /replica) and /metrics (a registry of its own) on
// health.listen. A report older than a few intervals fails every probe.
//
// It takes part in the control plane when configured: with
// coordinator.addresses it asks any coordinator who leads, registers with
// the leader over TLS (and a bearer token), streams every report to it and
// carries out its commands, following the leadership as it moves; with
// gossip.bind it joins the memberlist pool.
package daemon
