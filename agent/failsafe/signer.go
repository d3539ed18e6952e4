package failsafe

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// signer keeps this agent's failsafe signing key (an Ed25519 seed, hex,
// 0600) across restarts, beside the acknowledgement: a restart while the
// coordinators are unreachable must not change the key the primary knows
// from Raft.
type signer struct {
	path string // "" without an agent socket: the key lives in memory only

	mu  sync.Mutex
	key ed25519.PrivateKey
}

// get returns this agent's failsafe key: read from path, or created there
// (or only in memory without a path) on first use.
func (s *signer) get() (ed25519.PrivateKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return s.key, nil
	}
	path := s.path
	if path != "" {
		if b, err := os.ReadFile(path); err == nil {
			seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
			if err != nil || len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("failsafe key %s: not a hex Ed25519 seed; remove it to make a new one", path)
			}
			s.key = ed25519.NewKeyFromSeed(seed)
			return s.key, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("failsafe key: %w", err)
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("failsafe key: %w", err)
	}
	if path != "" {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(hex.EncodeToString(priv.Seed())+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("failsafe key: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("failsafe key: %w", err)
		}
	}
	s.key = priv
	return priv, nil
}
