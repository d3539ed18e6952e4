package orders

import (
	"fmt"
	"strings"
)

// confQuote quotes s as a string value of postgresql.conf or
// postgresql.auto.conf. The files' syntax is not SQL's: a backslash starts
// an escape there (PostgreSQL's own escape_single_quotes_ascii doubles
// backslashes as well as quotes when ALTER SYSTEM writes the file), and a
// quoted value cannot span lines. So ' and \ are doubled, and every
// control character is written as a three-digit octal escape: whatever s
// holds, the line is one setting whose value reads back as s (up to a NUL,
// where PostgreSQL's strings end). quoteLiteral is for SQL statements
// only.
func confQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			b.WriteString("''")
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// quoteLiteral quotes s as an SQL escape string literal, E'...', with \
// and ' doubled: the same value whatever standard_conforming_strings is
// (off, a plain '...' literal takes \' as an escaped quote and the value
// could end early, the rest run as SQL). For statements that take no bind
// parameters (ALTER SYSTEM); not for configuration files: see confQuote.
func quoteLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 3)
	b.WriteString("E'")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString("''")
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
