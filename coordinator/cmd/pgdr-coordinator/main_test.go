package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/buildinfo"
)

func TestVersionFlags(t *testing.T) {
	want := buildinfo.Line("pgdr-coordinator")
	for _, a := range []string{"version", "--version", "-version", "-V"} {
		var out, errb bytes.Buffer
		if code := run([]string{a}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != want {
			t.Errorf("pgdr-coordinator %s: exit %d, stdout %q (want %q), stderr %q", a, code, out.String(), want, errb.String())
		}
	}
}

// TestRunForceEmptyFlag: review D5. run takes --force-empty (a config
// error, not a flag error, follows), and the help says what an empty
// data_dir that a peer still lists does and how it rejoins.
func TestRunForceEmptyFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--force-empty", "--config", "/nonexistent/coordinator.yaml"}, &out, &errb); code != 1 || strings.Contains(errb.String(), "flag provided but not defined") {
		t.Fatalf("run --force-empty: exit %d, stderr %q; want the config's error (exit 1)", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, s := range []string{"--force-empty", "refuses to start", "pgdrctl coordinator remove --name NAME"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help does not say %q", s)
		}
	}
}
