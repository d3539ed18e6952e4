package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/buildinfo"
)

func TestVersionFlags(t *testing.T) {
	want := buildinfo.Line("pgdr-agent")
	for _, a := range []string{"version", "--version", "-version", "-V"} {
		var out, errb bytes.Buffer
		if code := Main([]string{a}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != want {
			t.Errorf("pgdr-agent %s: exit %d, stdout %q (want %q), stderr %q", a, code, out.String(), want, errb.String())
		}
	}
}
