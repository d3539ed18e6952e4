package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestTablespaceMapFlag(t *testing.T) {
	m := tablespaceMapFlag{}
	for _, v := range []string{"16385=/srv/a", "spc b=/srv/b=c"} {
		if err := m.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	if m["16385"] != "/srv/a" || m["spc b"] != "/srv/b=c" || m.String() != "16385=/srv/a,spc b=/srv/b=c" {
		t.Fatalf("parsed %v", m)
	}
	for _, v := range []string{"16385=/other", "nodir", "=/srv/x", "x="} {
		if err := m.Set(v); err == nil {
			t.Errorf("Set(%q) accepted", v)
		}
	}
	// A malformed mapping is a usage error before any configuration is read.
	var out, errb bytes.Buffer
	if code := Main([]string{"restore", "--pgdata", "/x", "--tablespace-map", "a=/x", "--tablespace-map", "a=/y"}, &out, &errb); code != ExitUsage ||
		!strings.Contains(errb.String(), "already mapped") {
		t.Fatalf("a tablespace mapped twice: exit %d\n%s", code, errb.String())
	}
}
