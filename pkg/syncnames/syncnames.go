package syncnames

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Setting is a parsed synchronous_standby_names: commits wait for Num
// of Names (FIRST: the first Num connected in list order; ANY: any Num).
type Setting struct {
	Method string // "FIRST" or "ANY"
	Num    int
	Names  []string
}

var settingRe = regexp.MustCompile(`(?is)^\s*(?:(first|any)\s+)?(\d+)\s*\((.*)\)\s*$`)

// Parse parses a synchronous_standby_names value the way
// PostgreSQL reads it: "FIRST n (a, b)", "ANY n (a, b)", "n (a, b)" (FIRST),
// or a plain list "a, b" (FIRST 1). Names may be double-quoted. ok is false
// for "" (asynchronous) and for what it cannot read.
func Parse(s string) (Setting, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Setting{}, false
	}
	st := Setting{Method: "FIRST", Num: 1}
	list := s
	if m := settingRe.FindStringSubmatch(s); m != nil {
		if m[1] != "" {
			st.Method = strings.ToUpper(m[1])
		}
		n, err := strconv.Atoi(m[2])
		if err != nil || n < 1 {
			return Setting{}, false
		}
		st.Num, list = n, m[3]
	}
	names, ok := splitNames(list)
	if !ok || len(names) == 0 {
		return Setting{}, false
	}
	st.Names = names
	return st, true
}

// splitNames splits a comma-separated list of standby names, unquoting
// double-quoted ones ("" inside quotes is one ").
func splitNames(s string) ([]string, bool) {
	var out []string
	for rest := s; ; {
		rest = strings.TrimLeft(rest, " \t\n")
		var name string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest); i++ {
				if rest[i] == '"' {
					if i+1 < len(rest) && rest[i+1] == '"' {
						b.WriteByte('"')
						i++
						continue
					}
					break
				}
				b.WriteByte(rest[i])
			}
			if i >= len(rest) {
				return nil, false // unterminated quote
			}
			name, rest = b.String(), strings.TrimLeft(rest[i+1:], " \t\n")
			if name == "" {
				return nil, false
			}
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			name, rest = strings.TrimSpace(rest[:end]), rest[end:]
			if name == "" || strings.ContainsAny(name, `"() `) {
				return nil, false
			}
		}
		out = append(out, name)
		if rest == "" {
			return out, true
		}
		if rest[0] != ',' {
			return nil, false
		}
		rest = rest[1:]
	}
}

// String writes the setting as pgdr sets it, e.g. FIRST 1 ("pg-a2") or
// ANY 2 ("pg-a2", "pg-b1"); "" for no names.
func (s Setting) String() string {
	if len(s.Names) == 0 {
		return ""
	}
	q := make([]string, len(s.Names))
	for i, n := range s.Names {
		if n == "*" {
			q[i] = n
			continue
		}
		q[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return fmt.Sprintf("%s %d (%s)", s.Method, s.Num, strings.Join(q, ", "))
}
