package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestWalPushNotReadyAndRepair is the sequence through the
// command line: a hand push of a segment still being written is refused;
// forced, it leaves an incomplete copy that makes every later
// archive_command fail on the conflict; wal-repair shows both versions,
// changes nothing without --yes, and with --yes replaces the stored copy so
// archiving goes on.
func TestWalPushNotReadyAndRepair(t *testing.T) {
	cfg, pgwal := walFetchConfig(t)
	t.Setenv("PGDR_CONFIG", "")
	const segSize = 1 << 20
	name := wal.SegmentName(1, 3, segSize)
	path := filepath.Join(pgwal, name)
	full := testutil.FakeSegment(7300000000000000042, 1, 3, segSize)
	partial := bytes.Clone(full)
	clear(partial[segSize/2:])
	if err := os.WriteFile(path, partial, 0o600); err != nil {
		t.Fatal(err)
	}
	repoObj := filepath.Join(filepath.Dir(cfg), "repo", "c1", "wal", name[:8], name)
	agent := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Main(args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, _, stderr := agent("wal-push", "--config", cfg, path)
	if code == 0 || !strings.Contains(stderr, name) || !strings.Contains(stderr, "not marked it ready") || !strings.Contains(stderr, "--force") {
		t.Fatalf("hand push of a segment not marked ready: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(repoObj); err == nil {
		t.Fatal("the refused hand push stored the segment")
	}
	if code, _, stderr := agent("wal-push", "--config", cfg, "--force", path); code != 0 {
		t.Fatalf("wal-push --force: exit %d\n%s", code, stderr)
	}
	stored, err := os.ReadFile(repoObj)
	if err != nil {
		t.Fatal(err)
	}

	// PostgreSQL finishes the segment and asks for it: the conflict.
	os.WriteFile(path, full, 0o600)
	os.WriteFile(filepath.Join(pgwal, "archive_status", name+".ready"), nil, 0o600)
	if code, _, stderr := agent("wal-push", "--config", cfg, path); code == 0 || !strings.Contains(stderr, "wal-repair") {
		t.Fatalf("archive_command after the hand push: exit %d, want a failure pointing at wal-repair\n%s", code, stderr)
	}

	// Without confirmation: both versions shown, nothing changed.
	code, stdout, stderr := agent("wal-repair", "--config", cfg, name)
	t.Logf("wal-repair without --yes (exit %d):\n%s", code, stdout)
	if code == 0 {
		t.Fatalf("wal-repair without --yes: exit 0\n%s%s", stdout, stderr)
	}
	for _, want := range []string{name, sha256hex(full), sha256hex(partial), "DIFFERENT", "ready", "--yes", "nothing was changed"} {
		if !strings.Contains(stdout+stderr, want) {
			t.Fatalf("wal-repair without --yes does not show %q:\n%s%s", want, stdout, stderr)
		}
	}
	code, stdout, stderr = agent("wal-repair", "--config", cfg, "--json", name)
	var js struct {
		Conflicting []string `json:"conflicting"`
		Changed     bool     `json:"changed"`
		Versions    struct {
			Local struct {
				SHA256 string `json:"sha256"`
			} `json:"local"`
			Stored []struct {
				SHA256 string `json:"sha256"`
				Same   bool   `json:"same"`
			} `json:"stored"`
		} `json:"versions"`
	}
	if err := json.Unmarshal([]byte(stdout), &js); err != nil || code == 0 || js.Changed || len(js.Conflicting) != 1 ||
		js.Versions.Local.SHA256 != sha256hex(full) || len(js.Versions.Stored) != 1 || js.Versions.Stored[0].SHA256 != sha256hex(partial) || js.Versions.Stored[0].Same {
		t.Fatalf("wal-repair --json without --yes: exit %d, %v, %+v\n%s%s", code, err, js, stdout, stderr)
	}
	if after, _ := os.ReadFile(repoObj); !bytes.Equal(after, stored) {
		t.Fatal("wal-repair without --yes changed the stored object")
	}
	// A file that is not there: a clear error, nothing changed.
	if code, _, stderr := agent("wal-repair", "--config", cfg, "--yes", wal.SegmentName(1, 9, segSize)); code == 0 || !strings.Contains(stderr, "no such file") {
		t.Fatalf("wal-repair of a missing local file: exit %d\n%s", code, stderr)
	}

	// Confirmed: replaced, and archive_command succeeds again.
	if code, stdout, stderr := agent("wal-repair", "--config", cfg, "--yes", name); code != 0 || !strings.Contains(stdout, "replaced") {
		t.Fatalf("wal-repair --yes: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := agent("wal-push", "--config", cfg, path); code != 0 {
		t.Fatalf("archive_command after the repair: exit %d\n%s", code, stderr)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if code, _, stderr := agent("wal-fetch", "--config", cfg, name, dest); code != 0 {
		t.Fatalf("wal-fetch after the repair: exit %d\n%s", code, stderr)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, full) {
		t.Fatal("after the repair the archive does not hold the finished segment")
	}
	if code, stdout, stderr := agent("wal-repair", "--config", cfg, name); code != 0 || !strings.Contains(stdout, "nothing to repair") {
		t.Fatalf("wal-repair with nothing to repair: exit %d\n%s%s", code, stdout, stderr)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
