package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestVersionFlags(t *testing.T) {
	for _, a := range []string{"version", "--version", "-version", "-V"} {
		var out, errb bytes.Buffer
		if code := run([]string{a}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "pgdr-coordinator ") {
			t.Errorf("pgdr-coordinator %s: exit %d, stdout %q, stderr %q", a, code, out.String(), errb.String())
		}
	}
}
