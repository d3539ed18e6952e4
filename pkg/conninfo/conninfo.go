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
	pairs, ok := split(dsn)
	if !ok {
		return ""
	}
	var out []string
	for _, p := range pairs {
		if p.key != "password" {
			out = append(out, p.text)
		}
	}
	return strings.Join(out, " ")
}

// libpqOnly are libpq connection keywords that pgx does not know: pgx
// sends an unknown keyword to the server as a startup parameter, which the
// server refuses ("unrecognized configuration parameter"), so a
// connection string libpq wrote (pg_basebackup -R writes sslcompression,
// ssl_min_protocol_version, gssencmode, ... into primary_conninfo) fails in
// pgx as it is. Each only tunes how libpq connects; dropping it keeps the
// destination and the credentials.
var libpqOnly = map[string]bool{
	"fallback_application_name": true, "keepalives": true, "keepalives_idle": true,
	"keepalives_interval": true, "keepalives_count": true, "tcp_user_timeout": true,
	"sslcompression": true, "sslcrl": true, "sslcrldir": true, "ssl_min_protocol_version": true,
	"ssl_max_protocol_version": true, "requirepeer": true, "gssencmode": true, "gsslib": true,
	"gssdelegation": true, "load_balance_hosts": true, "sslkeylogfile": true,
}

// ForPgx returns a libpq connection string in key=value form (as in
// primary_conninfo) that pgx can use: without the keywords only libpq
// knows (see libpqOnly), and with hostaddr as host when there is no host
// (pgx has no hostaddr; with a host, hostaddr only skips the name lookup
// and is dropped). A URL, or what does not parse, is returned unchanged.
func ForPgx(dsn string) string {
	t := strings.TrimSpace(dsn)
	if strings.HasPrefix(t, "postgres://") || strings.HasPrefix(t, "postgresql://") {
		return dsn
	}
	pairs, ok := split(t)
	if !ok {
		return dsn
	}
	hasHost := false
	for _, p := range pairs {
		hasHost = hasHost || p.key == "host"
	}
	var out []string
	for _, p := range pairs {
		switch {
		case libpqOnly[p.key]:
		case p.key == "hostaddr" && !hasHost:
			out = append(out, "host="+p.value)
		case p.key == "hostaddr":
		default:
			out = append(out, p.text)
		}
	}
	return strings.Join(out, " ")
}

// pair is one key=value of a connection string: text is it as written
// (value quoted as it was), value the raw value text after '='.
type pair struct{ key, value, text string }

// split parses key=value pairs (values may be quoted with ' and escaped
// with \); ok is false when dsn does not parse.
func split(dsn string) (pairs []pair, ok bool) {
	rest := dsn
	for {
		rest = strings.TrimLeft(rest, " \t\n\r")
		if rest == "" {
			return pairs, true
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return nil, false
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
				return nil, false
			}
			pairs = append(pairs, pair{key: key, value: rest[:i+1], text: key + "=" + rest[:i+1]})
			rest = rest[i+1:]
			continue
		}
		end := strings.IndexAny(rest, " \t\n\r")
		if end < 0 {
			end = len(rest)
		}
		pairs = append(pairs, pair{key: key, value: rest[:end], text: key + "=" + rest[:end]})
		rest = rest[end:]
	}
}
