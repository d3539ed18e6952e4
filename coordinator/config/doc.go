// Package config is the coordinator's configuration file: identity, Raft,
// API, gossip, TLS, authentication tokens and the bootstrap peer list.
// Unknown keys are errors and every validation error names its field.
package config
