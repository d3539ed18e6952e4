package cli

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestWalFetchIncludePartial: with --include-partial, a segment not in the
// archive is served from its stream partial (exit 0, padded to the
// segment size); without the flag it is not in the archive (exit 1); a
// damaged partial exits >= 126, never 1.
func TestWalFetchIncludePartial(t *testing.T) {
	cfg, pgwal := walFetchConfig(t)
	t.Setenv("PGDR_CONFIG", "")
	pushSegment(t, cfg, pgwal, 3)
	const segSize = 1 << 20
	missing := wal.SegmentName(1, 4, segSize)
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := walship.New(context.Background(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	data := testutil.FakeSegment(7300000000000000042, 1, 4, segSize)[:20000]
	if err := sh.PushPartial(context.Background(), missing, data); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(pgwal, "RECOVERYXLOG")
	fetch := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := Main(append(append([]string{"wal-fetch", "--config", cfg}, args...), missing, dest), &stdout, &stderr)
		return code, stderr.String()
	}
	if code, stderr := fetch(); code != ExitNotFound {
		t.Fatalf("wal-fetch without --include-partial: exit %d, want %d\n%s", code, ExitNotFound, stderr)
	}
	if code, stderr := fetch("--include-partial"); code != 0 {
		t.Fatalf("wal-fetch --include-partial: exit %d\n%s", code, stderr)
	}
	got, _ := os.ReadFile(dest)
	if len(got) != segSize || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("served %d bytes, want the partial padded to %d", len(got), segSize)
	}
	obj := filepath.Join(filepath.Dir(cfg), "repo", filepath.FromSlash(repo.StreamPartialKey("c1", missing)))
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	os.WriteFile(obj, b, 0o600)
	if code, stderr := fetch("--include-partial"); !fatal(code) || !strings.Contains(stderr, "partial") {
		t.Fatalf("wal-fetch --include-partial of a damaged partial: exit %d, want >= 126\n%s", code, stderr)
	}
}
