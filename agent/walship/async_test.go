package walship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/wal"
)

// With an async repository: a push writes the sync repository and queues
// the async one; and an async repository that fails (its region is down)
// or lags does not keep the sync repositories' "not in the archive" from
// ending recovery: a standby's restore_command failing with >= 126 would
// stop its server.
func TestAsyncRepositoryPushAndFetch(t *testing.T) {
	f := newFixture(t, "")
	down := filepath.Join(t.TempDir(), "down")
	os.MkdirAll(filepath.Join(down, "repo"), 0o700)
	state := t.TempDir()
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: dr, url: 'file://%s/repo', mode: async}, {name: r1, url: 'file://%s'}]\nencryption: {identity_file: %s, recipients: [%s]}\nagent: {state_dir: %s}\n",
		f.pgdata, down, f.repo, f.identity, f.cfg.Encryption.Recipients[0], state)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// The async repository goes down: every access to it fails.
	os.RemoveAll(down)
	os.WriteFile(down, []byte("not a directory"), 0o600)
	ctx := context.Background()
	name, _ := f.segment(t, 3)
	if err := sh.push(ctx, filepath.Join(f.pgwal, name)); err != nil {
		t.Fatalf("push with the async repository down: %v", err)
	}
	if !f.stored(name) {
		t.Fatal("not in the sync repository")
	}
	q, _ := os.ReadDir(filepath.Join(state, "repocopy", "dr"))
	if len(q) != 1 {
		t.Fatalf("copy queue holds %d entries, want 1", len(q))
	}
	dest := filepath.Join(t.TempDir(), "out")
	if err := sh.Fetch(ctx, name, dest); err != nil {
		t.Fatalf("fetch with the async repository down: %v", err)
	}
	err = sh.Fetch(ctx, wal.SegmentName(1, 9, segSize), dest)
	if !errors.Is(err, ErrNotInArchive) {
		t.Fatalf("a segment no sync repository holds, the async one down: %v, want ErrNotInArchive", err)
	}
}
