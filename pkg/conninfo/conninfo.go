package conninfo

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxLen is the longest DSN accepted.
const MaxLen = 1024

// ErrInvalid is the error every refusal wraps.
var ErrInvalid = errors.New("invalid DSN")

// Check refuses a DSN that cannot be carried safely into a configuration
// file or an order: one longer than MaxLen, not valid UTF-8, or holding a
// control character (NUL, newline, carriage return, tab or any other below
// 0x20, and DEL). libpq needs none of them — values with spaces are
// quoted — and a newline is what turned a DSN into extra settings of
// postgresql.auto.conf (issue 13). The message names the offending byte's
// position, never the DSN, which may hold a password.
func Check(dsn string) error {
	if len(dsn) > MaxLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLen)
	}
	if !utf8.ValidString(dsn) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	for i := 0; i < len(dsn); i++ {
		if c := dsn[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: control character %#02x at byte %d", ErrInvalid, c, i)
		}
	}
	return nil
}
