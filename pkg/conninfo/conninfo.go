package conninfo

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
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

// WithoutPassword returns dsn with any password removed, in either libpq
// form: a URL (postgres://user:pw@host/db?password=pw) or key=value pairs
// (values may be quoted with ' and escaped with \). What cannot be parsed
// is dropped entirely rather than risk sending a secret.
func WithoutPassword(dsn string) string {
	dsn = strings.TrimSpace(dsn)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return ""
		}
		if u.User != nil {
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		if q.Has("password") {
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	var out []string
	rest := dsn
	for {
		rest = strings.TrimLeft(rest, " \t\n\r")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return ""
		}
		key := strings.TrimSpace(rest[:eq])
		rest = strings.TrimLeft(rest[eq+1:], " \t\n\r")
		if strings.HasPrefix(rest, "'") {
			i, closed := 1, false
			for ; i < len(rest); i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
					continue
				}
				if rest[i] == '\'' {
					closed = true
					break
				}
			}
			if !closed {
				return ""
			}
			pair := key + "=" + rest[:i+1]
			rest = rest[i+1:]
			if key != "password" {
				out = append(out, pair)
			}
			continue
		}
		end := strings.IndexAny(rest, " \t\n\r")
		if end < 0 {
			end = len(rest)
		}
		if key != "password" {
			out = append(out, key+"="+rest[:end])
		}
		rest = rest[end:]
	}
	return strings.Join(out, " ")
}
