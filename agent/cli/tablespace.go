package cli

import (
	"fmt"
	"sort"
	"strings"
)

// tablespaceMapFlag collects repeated --tablespace-map OID_OR_NAME=DIR
// flags.
type tablespaceMapFlag map[string]string

func (t tablespaceMapFlag) String() string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + t[k]
	}
	return strings.Join(parts, ",")
}

// Set parses one OID_OR_NAME=DIR (split at the first '=', so a name holding
// '=' is mapped by its OID instead).
func (t tablespaceMapFlag) Set(v string) error {
	key, dir, ok := strings.Cut(v, "=")
	if !ok || key == "" || dir == "" {
		return fmt.Errorf("%q: want OID_OR_NAME=DIR", v)
	}
	if prev, dup := t[key]; dup {
		return fmt.Errorf("%q: tablespace %s is already mapped to %s", v, key, prev)
	}
	t[key] = dir
	return nil
}
