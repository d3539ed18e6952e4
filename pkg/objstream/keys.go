package objstream

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/fsutil"
)

// ParseRecipients parses age recipients, one per element: X25519
// ("age1...") or post-quantum hybrid ("age1pq1...") public keys. Leading
// and trailing white space is ignored, and so are empty elements and
// elements starting with "#", so the lines of a recipients file can be
// passed as they are. The error for a bad entry names it (by position, and
// by value unless it looks like a secret key); at least one recipient is
// required.
func ParseRecipients(lines []string) ([]age.Recipient, error) {
	var recs []age.Recipient
	for i, line := range lines {
		s := strings.TrimSpace(line)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if strings.HasPrefix(strings.ToUpper(s), "AGE-SECRET-KEY-") {
			return nil, fmt.Errorf("objstream: recipient %d is an age secret key (AGE-SECRET-KEY-...), not a public key; "+
				"use the \"# public key: age1...\" line of the identity file", i+1)
		}
		var (
			r   age.Recipient
			err error
		)
		switch {
		case strings.HasPrefix(s, "age1pq1"):
			r, err = age.ParseHybridRecipient(s)
		case strings.HasPrefix(s, "age1"):
			r, err = age.ParseX25519Recipient(s)
		default:
			err = errors.New(`not an age public key (want "age1...")`)
		}
		if err != nil {
			return nil, fmt.Errorf("objstream: bad age recipient %d %q: %w", i+1, abbrev(s), err)
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return nil, errors.New("objstream: no age recipients given")
	}
	return recs, nil
}

// abbrev shortens s for error messages.
func abbrev(s string) string {
	const maxLen = 100
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}

// LoadIdentities reads age identities (X25519 "AGE-SECRET-KEY-1..." or
// hybrid "AGE-SECRET-KEY-PQ-1..." lines; "#" comments and empty lines are
// ignored) from the identity file at path, as written by age-keygen or
// GenerateIdentity. Errors name the file.
func LoadIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("objstream: loading age identities: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("objstream: loading age identities from %s: %w", path, err)
	}
	return ids, nil
}

// GenerateIdentity creates a new X25519 identity and writes it to a new
// file at path with mode 0600, in age-keygen's format:
//
//	# created: 2006-01-02T15:04:05Z07:00
//	# public key: age1...
//	AGE-SECRET-KEY-1...
//
// It refuses to overwrite an existing file. The file is synced to disk
// before GenerateIdentity returns. It returns the recipient (public key)
// string.
func GenerateIdentity(path string) (recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fmt.Errorf("objstream: generating age identity: %w", err)
	}
	recipient = id.Recipient().String()
	content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n",
		time.Now().Format(time.RFC3339), recipient, id.String())

	if err := createKeyFile(path, "age identity", content); err != nil {
		return "", err
	}
	return recipient, nil
}

// createKeyFile writes a new secret key file: created exclusively (an
// existing file is never overwritten), mode exactly 0600 whatever the
// umask, synced, and its directory entry synced too (best effort). On an
// error the partial file is removed.
func createKeyFile(path, what, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("objstream: creating %s file: %w", what, err)
	}
	fail := func(step string, err error) error {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("objstream: %s %s file %s: %w", step, what, path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail("setting mode of", err)
	}
	if _, err := f.WriteString(content); err != nil {
		return fail("writing", err)
	}
	if err := f.Sync(); err != nil {
		return fail("syncing", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("objstream: closing %s file %s: %w", what, path, err)
	}
	_ = fsutil.SyncDir(filepath.Dir(path))
	return nil
}
