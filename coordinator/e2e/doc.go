// Package e2e holds end-to-end tests of the coordinator cluster: real
// pgdr-coordinator processes on loopback (Raft over TLS, gossip, gRPC),
// killed and restarted, and real PostgreSQL 15 servers with agents.
package e2e
