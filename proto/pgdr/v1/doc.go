// Package pgdrv1 holds the generated Go code of pgdr's v1 protocol: the
// replicated state (state.proto), the Raft command payloads (raft.proto), the
// agent API (agent.proto) and the admin API (admin.proto). Regenerate with
// `make proto`; never edit the *.pb.go files by hand.
package pgdrv1
