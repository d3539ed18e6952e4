// Package conninfo checks libpq connection strings (DSNs) that pgdr passes
// between processes: a member's DSN registered with the coordinator and
// handed out in follow, rejoin and switchover orders, which an agent
// writes into primary_conninfo. A DSN with a control character is refused
// wherever it enters (docs/security.md).
package conninfo
