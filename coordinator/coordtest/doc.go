// Package coordtest starts real pgdr-coordinator processes on loopback for
// tests: a dev CA and certificates, a gossip key, bearer tokens, one
// configuration and data directory per coordinator, and gRPC clients with
// any role. Every process is killed when the test ends.
package coordtest
