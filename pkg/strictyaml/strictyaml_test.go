package strictyaml

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type dur struct{ time.Duration }

func (d *dur) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	d.Duration = v
	return err
}

type conf struct {
	Cluster string `yaml:"cluster"`
	WAL     struct {
		PushConcurrency int `yaml:"push_concurrency"`
		Prefetch        int `yaml:"prefetch"`
	} `yaml:"wal"`
	Repos []struct {
		Name string `yaml:"name"`
		S3   *struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"s3"`
	} `yaml:"repos"`
	Leaders map[string]string `yaml:"leaders"`
	Loop    dur               `yaml:"loop"`
	Inline  `yaml:",inline"`
}

type Inline struct {
	Extra string `yaml:"extra"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the error; none means success
	}{
		{"valid", "cluster: main\nwal: {push_concurrency: 2}\nrepos: [{name: a, s3: {endpoint: x}}]\nleaders: {c1: a}\nloop: 1s\nextra: y\n", nil},
		{"typo in a nested key", "cluster: main\nwal:\n  push_concurency: 4\n",
			[]string{"line 3: unknown key wal.push_concurency", "did you mean wal.push_concurrency?"}},
		{"typo in a list element", "repos:\n  - name: a\n  - name: b\n    s3: {endpont: x}\n",
			[]string{"line 4: unknown key repos[1].s3.endpont", "did you mean repos[1].s3.endpoint?"}},
		{"unrelated key lists the known ones", "wal: {zzzzzzzzzz: 1}\n",
			[]string{"unknown key wal.zzzzzzzzzz", "known keys here: prefetch, push_concurrency"}},
		{"two unknown keys", "clustr: a\nwal: {prefetsh: 1}\n",
			[]string{"unknown key clustr (did you mean cluster?)", "unknown key wal.prefetsh (did you mean wal.prefetch?)"}},
		{"type error keeps the library's words", "wal: {prefetch: many}\n", []string{"invalid YAML", "line 1"}},
		{"a map's keys are free", "leaders: {anything: x}\n", nil},
		{"inline fields are known", "extra: y\nextr: z\n", []string{"unknown key extr (did you mean extra?)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c conf
			err := Decode([]byte(tc.doc), &c)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode accepted %q", tc.doc)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "strictyaml.") || strings.Contains(err.Error(), "not found in type") {
				t.Errorf("error names a Go type: %q", err)
			}
		})
	}
	var c conf
	if err := Decode([]byte("  \n"), &c); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty document: %v, want ErrEmpty", err)
	}
	var list []struct {
		Name string `yaml:"name"`
	}
	if err := Decode([]byte("- {name: a}\n- {nme: b}\n"), &list); err == nil || !strings.Contains(err.Error(), "unknown key [1].nme (did you mean [1].name?)") {
		t.Errorf("list document: %v", err)
	}
}

// TestDecodeAliasBomb: a small document whose anchors merge each other
// twice per level (<<: *m, <<: *m) names 2^40 paths to one unknown key. The
// unknown-key walk that follows a failed decode visits each node once per
// type, so Decode answers at once with the key reported once, instead of
// spinning (and piling up errors) for as long as the document is deep.
func TestDecodeAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("repos:\n  - &m0 {name: a, bogus: 1}\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&b, "  - &m%d {<<: *m%d, <<: *m%d}\n", i, i-1, i-1)
	}
	done := make(chan error, 1)
	go func() {
		var c conf
		done <- Decode([]byte(b.String()), &c)
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "unknown key repos[0].bogus") {
			t.Fatalf("err = %v, want the unknown key", err)
		}
		if n := strings.Count(err.Error(), "bogus"); n > 2 {
			t.Fatalf("the unknown key is reported %d times", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Decode of a 2 KB document with nested merge keys still running after 10s")
	}
}
