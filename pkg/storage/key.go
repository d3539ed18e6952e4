package storage

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey is returned (wrapped) by every method given a key or prefix
// that breaks the key rules of ObjectStore.
var ErrInvalidKey = errors.New("invalid object key")

// ErrSizeMismatch is returned (wrapped) by Put when the stream is shorter or
// longer than the size the caller declared.
var ErrSizeMismatch = errors.New("object size mismatch")

// ValidateKey reports whether key is a valid object key: a non-empty,
// '/'-separated relative path without empty, "." or ".." segments and
// without backslashes. The rules are strict on purpose: the same key must
// name the same object on a file system and on S3, so anything a file system
// would normalise (or Windows would read as a separator) is refused.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if err := validatePath(key); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, err)
	}
	return nil
}

// ValidatePrefix reports whether prefix is a valid List prefix. A prefix is a
// leading part of a key: it may be empty, may end with '/' and may end in the
// middle of a segment (e.g. "wal/00000001/0000000100000000000000"), but
// otherwise follows the key rules.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// A trailing '/' only says "everything below"; the rest must be a key.
	p := strings.TrimSuffix(prefix, "/")
	if p == "" {
		return fmt.Errorf("%w: prefix %q is absolute", ErrInvalidKey, prefix)
	}
	if err := validatePath(p); err != nil {
		return fmt.Errorf("%w: prefix %q: %s", ErrInvalidKey, prefix, err)
	}
	return nil
}

func validatePath(p string) error {
	if strings.HasPrefix(p, "/") {
		return errors.New("must be relative (no leading '/')")
	}
	if strings.Contains(p, `\`) {
		return errors.New(`must not contain '\'`)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return errors.New("must not contain NUL")
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "":
			return errors.New("must not contain empty segments")
		case ".", "..":
			return fmt.Errorf("must not contain %q segments", seg)
		}
	}
	return nil
}
