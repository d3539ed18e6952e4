package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestVersionFlags(t *testing.T) {
	for _, a := range []string{"version", "--version", "-version", "-V"} {
		var out, errb bytes.Buffer
		if code := Main([]string{a}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "pgdr-agent ") {
			t.Errorf("pgdr-agent %s: exit %d, stdout %q, stderr %q", a, code, out.String(), errb.String())
		}
	}
}
