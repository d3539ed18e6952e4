package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDrillUsage: bad flags get a clear error, exit 2, and nothing is
// created (no configuration is even read).
func TestDrillUsage(t *testing.T) {
	t.Setenv("PGDR_CONFIG", "")
	cfg := filepath.Join(t.TempDir(), "missing.yaml")
	badChecks := filepath.Join(t.TempDir(), "checks.yaml")
	if err := os.WriteFile(badChecks, []byte("- name: x\n  sql: SELECT 1\n  expected: '1'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(t.TempDir(), "scratch")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"drill", "--config", cfg, "--backup", "latest", "--tier", "daily"}, "give --backup or --tier, not both"},
		{[]string{"drill", "--config", cfg, "--tier", "Daily"}, `--tier "Daily"`},
		{[]string{"drill", "--config", cfg, "--target-time", "2026-12-07 10:00:00"}, "has no time zone"},
		{[]string{"drill", "--config", cfg, "--target-time", "yesterday"}, "not a time"},
		{[]string{"drill", "--config", cfg, "--parallel", "0"}, "--parallel 0"},
		{[]string{"drill", "--config", cfg, "--checks", badChecks}, "field expected not found"},
		{[]string{"drill", "--config", cfg, "--checks", filepath.Join(t.TempDir(), "none.yaml")}, "checks file"},
		{[]string{"drill", "--scratch", scratch}, "no configuration"},
	} {
		code, _, stderr := agentRun(tc.args...)
		if code != ExitUsage || !strings.Contains(stderr, tc.says) {
			t.Errorf("%v: exit %d, want %d saying %q:\n%s", tc.args, code, ExitUsage, tc.says, stderr)
		}
	}
	if _, err := os.Stat(scratch); err == nil {
		t.Errorf("a refused drill created %s", scratch)
	}
	code, _, stderr := agentRun("drill", "--help")
	if code != 0 || !strings.Contains(stderr, "--source-dsn") || !strings.Contains(stderr, "pg_amcheck") {
		t.Errorf("drill --help: exit %d\n%s", code, stderr)
	}
}

// TestDrillRefusedJSON: a drill that cannot run (a non-empty scratch
// directory, an unknown backup) exits 1 and, with --json, says so with the
// reason; the scratch directory is left as it was.
func TestDrillRefusedJSON(t *testing.T) {
	cfg, _ := walFetchConfig(t)
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "keep-me"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--scratch", full}, full + " is not empty"},
		{[]string{"--backup", "20200101T000000F"}, "no repository holds backup 20200101T000000F"},
	} {
		code, stdout, stderr := agentRun(append([]string{"drill", "--config", cfg, "--json"}, tc.args...)...)
		var out struct {
			OK      bool   `json:"ok"`
			Refused bool   `json:"refused"`
			Error   string `json:"error"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("%v: stdout is not JSON (%v):\n%s\n%s", tc.args, err, stdout, stderr)
		}
		if code != ExitFailure || out.OK || !out.Refused || !strings.Contains(out.Error, tc.says) {
			t.Errorf("%v: exit %d, %+v: want exit 1, refused, saying %q", tc.args, code, out, tc.says)
		}
	}
	if ents, _ := os.ReadDir(full); len(ents) != 1 {
		t.Errorf("the refused scratch directory holds %d entries, want its 1", len(ents))
	}
}
