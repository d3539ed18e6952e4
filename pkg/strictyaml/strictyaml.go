package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrEmpty is returned for a document with no content.
var ErrEmpty = errors.New("the file is empty")

// Decode decodes one YAML document into v (a pointer to a struct, or to a
// slice of structs), refusing keys that v has no field for. An unknown key is
// reported by its dotted path and line, with the nearest known key suggested;
// other errors are the YAML library's, prefixed with "invalid YAML".
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return ErrEmpty
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil {
		if unknown := UnknownKeys(&doc, reflect.TypeOf(v)); len(unknown) > 0 {
			return errors.Join(unknown...)
		}
	}
	return fmt.Errorf("invalid YAML: %w", err)
}

// UnknownKeys walks a decoded YAML tree against the Go type it is meant for
// and returns one error per key the type has no field for. Each node is
// walked once per type: an anchor reached again through aliases or merge
// keys (which can name exponentially many paths in a few lines) is not
// walked again, and its unknown keys are reported at their first path.
func UnknownKeys(n *yaml.Node, t reflect.Type) []error {
	w := walker{seen: map[walked]bool{}}
	w.walk(n, t, "")
	return w.out
}

// walked is one node walked against one type.
type walked struct {
	n *yaml.Node
	t reflect.Type
}

type walker struct {
	seen map[walked]bool
	out  []error
}

var unmarshaler = reflect.TypeFor[yaml.Unmarshaler]()

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n == nil || w.seen[walked{n, t}] {
		return
	}
	w.seen[walked{n, t}] = true
	out := &w.out
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			w.walk(c, t, path)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		w.walk(n.Alias, t, path)
		return
	}
	for t.Kind() == reflect.Pointer {
		if t.Implements(unmarshaler) {
			return // the type reads its own node
		}
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				w.walk(val, t, path)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				*out = append(*out, unknownKey(join(path, k.Value), k.Line, k.Value, fields))
				continue
			}
			w.walk(val, f, join(path, k.Value))
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps each YAML key of a struct (inline structs flattened) to
// its field's type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					m[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func unknownKey(path string, line int, key string, known map[string]reflect.Type) error {
	msg := fmt.Sprintf("line %d: unknown key %s", line, path)
	if s := nearest(key, known); s != "" {
		parent := strings.TrimSuffix(path, key)
		msg += fmt.Sprintf(" (did you mean %s%s?)", parent, s)
	} else if len(known) > 0 {
		names := make([]string, 0, len(known))
		for k := range known {
			names = append(names, k)
		}
		sort.Strings(names)
		msg += " (known keys here: " + strings.Join(names, ", ") + ")"
	}
	return errors.New(msg)
}

// nearest returns the known key closest to key by edit distance, when it is
// close enough to be a likely typo (at most a third of the key's length).
func nearest(key string, known map[string]reflect.Type) string {
	best, bestD := "", len(key)/3+1
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if d := distance(strings.ToLower(key), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
