// Package storagetest is the conformance suite for storage.ObjectStore.
// Every backend's tests call Run with a constructor for a fresh, empty store;
// the suite checks the behaviour the rest of pgdr relies on (atomic,
// size-checked Put; lexical List with mid-name prefixes; ErrNotFound and
// ErrInvalidKey wrapping; cancellation and concurrency; storage.Syncer where implemented) the same way for all
// of them, so a backend cannot pass with its own, weaker reading of the
// contract.
package storagetest
