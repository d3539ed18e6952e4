// Package ctl is pgdrctl, the operator's command line over the coordinators'
// gRPC admin API: status, members, history, pause/resume, coordinator
// membership, and `tls init` for a lab's development CA.
//
// Every command prints a human table by default and a stable JSON document
// with --json; the JSON is built from explicit structs (not protojson) so
// that numbers stay numbers and lists are never null, which is what scripts
// and the integration tests depend on.
//
// Connection settings come from flags or the environment (PGDR_ADDR,
// PGDR_CA, PGDR_CERT, PGDR_KEY, PGDR_TOKEN_FILE, PGDR_TOKEN). TLS is always
// on. Several coordinator addresses may be given: they are tried in order. A
// read moves on to the next after a failure to connect or codes.Unavailable;
// a write only when the request cannot have been submitted (no connection,
// or the coordinator answered that it submitted nothing), so a write that
// may have reached a coordinator is never sent twice. A write whose outcome
// is unknown says so: check `pgdrctl history` before repeating it.
//
// Exit statuses: 0 success, 1 a failure reported by a server or the
// environment, 2 a usage error (nothing was sent).
package ctl
