package daemon

import (
	"net/url"
	"strings"
)

// withoutPassword returns dsn with any password removed, in either libpq
// form: a URL (postgres://user:pw@host/db?password=pw) or key=value pairs
// (values may be quoted with ' and escaped with \). What cannot be parsed
// is dropped entirely rather than risk sending a secret.
func withoutPassword(dsn string) string {
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
