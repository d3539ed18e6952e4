package keys

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
)

// ErrNoIdentityFile means a command that reads encrypted objects has no
// encryption.identity_file configured.
var ErrNoIdentityFile = errors.New("encryption.identity_file is not set: reading encrypted objects needs the age identity")

// Recipients returns the age recipients objects are encrypted to: those
// listed in the config, those in recipients_file, and, when neither is
// given, the identity file's own recipient. It returns nil when encryption
// is disabled.
func Recipients(cfg *config.Config) ([]age.Recipient, error) {
	e := cfg.Encryption
	if e.Disabled {
		return nil, nil
	}
	lines := append([]string(nil), e.Recipients...)
	if e.RecipientsFile != "" {
		f, err := os.Open(e.RecipientsFile)
		if err != nil {
			return nil, fmt.Errorf("encryption.recipients_file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("encryption.recipients_file %s: %w", e.RecipientsFile, err)
		}
	}
	if len(lines) > 0 {
		rs, err := objstream.ParseRecipients(lines)
		if err != nil {
			return nil, fmt.Errorf("encryption.recipients: %w", err)
		}
		return rs, nil
	}
	ids, err := Identities(cfg)
	if err != nil {
		return nil, err
	}
	var rs []age.Recipient
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			rs = append(rs, x.Recipient())
		}
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("encryption: no recipients configured and %s holds no X25519 identity", e.IdentityFile)
	}
	return rs, nil
}

// Identities loads the identity file. It fails with ErrNoIdentityFile when
// none is configured, unless encryption is disabled (then there may be
// nothing to decrypt, and it returns none).
func Identities(cfg *config.Config) ([]age.Identity, error) {
	if cfg.Encryption.IdentityFile == "" {
		if cfg.Encryption.Disabled {
			return nil, nil
		}
		return nil, ErrNoIdentityFile
	}
	ids, err := objstream.LoadIdentities(cfg.Encryption.IdentityFile)
	if err != nil {
		return nil, fmt.Errorf("encryption.identity_file: %w", err)
	}
	return ids, nil
}

// StreamOptions returns the objstream options for writing with cfg.
func StreamOptions(cfg *config.Config, recipients []age.Recipient) objstream.Options {
	return objstream.Options{
		Compression: cfg.Compression.Method,
		Level:       cfg.Compression.Level,
		Recipients:  recipients,
		Unencrypted: cfg.Encryption.Disabled,
		PlainSize:   -1,
	}
}

// ErrNoSigningKey means a writer has signing configured (so readers refuse
// unsigned objects) but no signing.key_file to sign with.
var ErrNoSigningKey = errors.New("signing.key_file is not set: signing is configured (public keys given, require not false), so objects written unsigned would be refused by every reader")

// Signer loads the signing key writers sign manifests and WAL objects
// with: nil when signing.key_file is not set and unsigned objects are
// acceptable (signing not configured, or require: false), ErrNoSigningKey
// when they are not.
func Signer(cfg *config.Config) (*objstream.Signer, error) {
	if cfg.Signing.KeyFile == "" {
		if cfg.Signing.Required() {
			return nil, ErrNoSigningKey
		}
		return nil, nil
	}
	s, err := objstream.LoadSigner(cfg.Signing.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("signing.key_file: %w", err)
	}
	return s, nil
}

// Verifier returns the verifier readers check signed objects with: the
// keys in signing.public_keys, in signing.public_keys_file, and the public
// key of signing.key_file. It returns nil when signing is not configured.
func Verifier(cfg *config.Config) (*objstream.Verifier, error) {
	sg := cfg.Signing
	if !sg.Configured() {
		return nil, nil
	}
	var pks []objstream.PublicKey
	add := func(what, s string) error {
		pk, err := objstream.ParsePublicKey(s)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		pks = append(pks, pk)
		return nil
	}
	for i, s := range sg.PublicKeys {
		if err := add(fmt.Sprintf("signing.public_keys[%d]", i), s); err != nil {
			return nil, err
		}
	}
	if sg.PublicKeysFile != "" {
		b, err := os.ReadFile(sg.PublicKeysFile)
		if err != nil {
			return nil, fmt.Errorf("signing.public_keys_file: %w", err)
		}
		for i, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if err := add(fmt.Sprintf("signing.public_keys_file %s line %d", sg.PublicKeysFile, i+1), l); err != nil {
				return nil, err
			}
		}
	}
	if sg.KeyFile != "" {
		s, err := objstream.LoadSigner(sg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("signing.key_file: %w", err)
		}
		pks = append(pks, s.Public())
	}
	v, err := objstream.NewVerifier(pks, sg.Required())
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return v, nil
}
