package walrecv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestUploadSkipsConflict: a complete spool segment the archive holds with
// different content is reported and skipped (kept in the spool), not
// retried ahead of every later segment forever: the next segment is still
// archived.
func TestUploadSkipsConflict(t *testing.T) {
	const sysid, ss = 7300000000000000077, 1 << 20
	pgdata := testutil.FakePGData(t, sysid)
	repoDir, spool := t.TempDir(), t.TempDir()
	cfg, err := config.Parse([]byte(fmt.Sprintf("cluster: c\nnode: {name: n}\npostgres: {pgdata: %s}\nrepos: [{url: 'file://%s'}]\nencryption: {disabled: true}\n", pgdata, repoDir)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sh, err := walship.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a, b := wal.SegmentName(1, 3, ss), wal.SegmentName(1, 4, ss)
	other := testutil.FakeSegment(sysid, 1, 3, ss)
	other[5000] ^= 1
	if err := sh.PushSegment(ctx, a, other); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{a, b} {
		if err := os.WriteFile(filepath.Join(spool, n), testutil.FakeSegment(sysid, 1, uint64(3+i), ss), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := New(Config{SpoolDir: spool}, Deps{Upload: sh})
	r.segSize = ss
	for range 2 {
		r.uploadOnce(ctx)
	}
	if _, err := os.Stat(filepath.Join(repoDir, filepath.FromSlash(repo.WALKey("c", b)))); err != nil {
		t.Fatalf("the segment after a conflicting one was not archived: %v", err)
	}
	if s := r.Status(); s.UploadFailures != 1 {
		t.Fatalf("%d upload failures reported, want 1 (the conflict, once)", s.UploadFailures)
	}
	if _, err := os.Stat(filepath.Join(spool, a)); err != nil {
		t.Fatalf("the conflicting segment was removed from the spool: %v", err)
	}
}
