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
