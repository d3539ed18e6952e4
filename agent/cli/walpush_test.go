package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestWalPushCopyOfSegmentNotReady: copying the segment PostgreSQL is still
// writing out of pg_wal and pushing the copy must not get around the
// readiness check: the file's name is a segment that pg_wal holds without
// archive_status/<name>.ready or .done, so the push is refused unless
// forced. A copy of a segment marked ready goes through.
func TestWalPushCopyOfSegmentNotReady(t *testing.T) {
	cfg, pgwal := walFetchConfig(t)
	t.Setenv("PGDR_CONFIG", "")
	const segSize = 1 << 20
	name := wal.SegmentName(1, 3, segSize)
	full := testutil.FakeSegment(7300000000000000042, 1, 3, segSize)
	if err := os.WriteFile(filepath.Join(pgwal, name), full, 0o600); err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	cp := filepath.Join(copyDir, name)
	if err := os.WriteFile(cp, full, 0o600); err != nil {
		t.Fatal(err)
	}
	repoObj := filepath.Join(filepath.Dir(cfg), "repo", "c1", "wal", name[:8], name)
	push := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := Main(append([]string{"wal-push", "--config", cfg}, args...), &stdout, &stderr)
		return code, stderr.String()
	}
	code, stderr := push(cp)
	if code == 0 || !strings.Contains(stderr, "not marked it ready") || !strings.Contains(stderr, filepath.Join(pgwal, name)) || !strings.Contains(stderr, "--force") {
		t.Fatalf("push of a copy of a segment pg_wal holds without .ready: exit %d, want a refusal naming %s and --force\n%s", code, filepath.Join(pgwal, name), stderr)
	}
	if _, err := os.Stat(repoObj); err == nil {
		t.Fatal("the refused push stored the segment")
	}

	// Marked ready: the copy is the finished segment.
	if err := os.WriteFile(filepath.Join(pgwal, "archive_status", name+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stderr := push(cp); code != 0 {
		t.Fatalf("push of a copy of a ready segment: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(repoObj); err != nil {
		t.Fatalf("the segment was not stored: %v", err)
	}

	// Another segment not ready in pg_wal, copied out: --force pushes it.
	name2 := wal.SegmentName(1, 4, segSize)
	seg2 := testutil.FakeSegment(7300000000000000042, 1, 4, segSize)
	os.WriteFile(filepath.Join(pgwal, name2), seg2, 0o600)
	cp2 := filepath.Join(copyDir, name2)
	os.WriteFile(cp2, seg2, 0o600)
	if code, _ := push(cp2); code == 0 {
		t.Fatalf("push of a copy of %s (not ready in pg_wal) succeeded", name2)
	}
	if code, stderr := push("--force", cp2); code != 0 {
		t.Fatalf("forced push of a copy: exit %d\n%s", code, stderr)
	}
	// A segment pg_wal does not hold (an old one, recycled): no check.
	name3 := wal.SegmentName(1, 1, segSize)
	cp3 := filepath.Join(copyDir, name3)
	os.WriteFile(cp3, testutil.FakeSegment(7300000000000000042, 1, 1, segSize), 0o600)
	if code, stderr := push(cp3); code != 0 {
		t.Fatalf("push of a segment pg_wal no longer holds: exit %d\n%s", code, stderr)
	}
}
