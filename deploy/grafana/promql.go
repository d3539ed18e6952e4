package grafana

import (
	"fmt"
	"slices"
	"strings"
)

// keywords are the PromQL words that look like a metric name but are not one:
// aggregation operators (which may be followed by by/without instead of a
// parenthesis), binary operators and modifiers, and the number literals.
var keywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "offset": true, "and": true, "or": true, "unless": true, "atan2": true,
	"inf": true, "nan": true,
}

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// MetricNames returns the metric names a PromQL expression selects, sorted
// and without repeats: every identifier that is not a function (followed by
// "("), a keyword or a label name in a by/without/on/ignoring/group_left/
// group_right list, outside string literals, label matchers and range
// brackets; plus a __name__ equality matcher's value. Grafana variables
// ($x, ${x}) are skipped. An unterminated string, matcher or bracket is an
// error naming where it starts.
func MetricNames(expr string) ([]string, error) {
	var names []string
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, name, err := matchers(expr, i)
			if err != nil {
				return nil, err
			}
			if name != "" {
				names = append(names, name)
			}
			i = end
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("promql %q: unterminated [ at offset %d", expr, i)
			}
			i += end + 1
		case c == '$':
			i = skipVariable(expr, i)
		case isDigit(c) || (c == '.' && i+1 < len(expr) && isDigit(expr[i+1])):
			// Numbers, durations (5m, 1h30m), hex and exponents.
			for i < len(expr) && (isIdentChar(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpace(expr, i)
			lower := strings.ToLower(word)
			switch {
			case labelListKeywords[lower] && next < len(expr) && expr[next] == '(':
				end := strings.IndexByte(expr[next:], ')')
				if end < 0 {
					return nil, fmt.Errorf("promql %q: unterminated label list after %s at offset %d", expr, word, start)
				}
				i = next + end + 1
			case keywords[lower]:
			case next < len(expr) && expr[next] == '(':
				// A function call.
			default:
				names = append(names, word)
			}
		default:
			i++ // operators, parentheses, commas, @
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// matchers skips the label matchers starting at the "{" at expr[i] and
// returns the offset after the closing "}" and the value of a __name__="x"
// matcher if there is one.
func matchers(expr string, i int) (int, string, error) {
	start := i
	var name string
	i++
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == '}':
			return i + 1, name, nil
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(expr, i)
			if err != nil {
				return 0, "", err
			}
			i = end
		case isIdentStart(c):
			s := i
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
			label := expr[s:i]
			j := skipSpace(expr, i)
			if label != "__name__" || j >= len(expr) || expr[j] != '=' || (j+1 < len(expr) && expr[j+1] == '~') {
				continue
			}
			j = skipSpace(expr, j+1)
			if j >= len(expr) || (expr[j] != '"' && expr[j] != '\'' && expr[j] != '`') {
				continue
			}
			end, err := skipString(expr, j)
			if err != nil {
				return 0, "", err
			}
			name = expr[j+1 : end-1]
			i = end
		default:
			i++
		}
	}
	return 0, "", fmt.Errorf("promql %q: unterminated { at offset %d", expr, start)
}

// skipString returns the offset after the string literal starting at
// expr[i]; backslash escapes apply in "..." and '...', not in `...`.
func skipString(expr string, i int) (int, error) {
	q := expr[i]
	for j := i + 1; j < len(expr); j++ {
		switch {
		case expr[j] == '\\' && q != '`':
			j++
		case expr[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("promql %q: unterminated string at offset %d", expr, i)
}

// skipVariable returns the offset after the Grafana variable ($name or
// ${name...}) starting at expr[i].
func skipVariable(expr string, i int) int {
	i++
	if i < len(expr) && expr[i] == '{' {
		if end := strings.IndexByte(expr[i:], '}'); end >= 0 {
			return i + end + 1
		}
		return len(expr)
	}
	for i < len(expr) && (isIdentChar(expr[i]) && expr[i] != ':') {
		i++
	}
	return i
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) }
