package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/agentsock"
	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestHandOff runs the daemon and hands it a wal-push over the socket, as
// the one-shot command does; a path outside its pg_wal is refused; without
// a daemon agentsock.Call says so, so the caller works alone.
func TestHandOff(t *testing.T) {
	const sysid, segSize = 7300000000000000099, 1 << 20
	pgdata := testutil.FakePGData(t, sysid)
	repoDir := t.TempDir()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cfg, err := config.Parse([]byte(fmt.Sprintf(
		"cluster: c\nnode: {name: n}\npostgres: {pgdata: %s}\nrepos: [{url: 'file://%s'}]\nencryption: {disabled: true}\nagent: {socket: %s}\nhealth: {listen: ''}\n",
		pgdata, repoDir, sock)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := agentsock.Call(ctx, sock, agentsock.Request{Op: "wal-push", Path: "/x"}); !errors.Is(err, agentsock.ErrNoDaemon) {
		t.Fatalf("no daemon: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- New(cfg, sh, log).Run(rctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the daemon did not stop")
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Error("the socket was left behind")
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "the daemon's socket", func() (bool, error) {
		_, err := os.Stat(sock)
		return err == nil, err
	})
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}

	// Marked .done rather than .ready, so the push-ahead loop leaves it
	// alone and only the hand-off can push it (a file marked neither is
	// refused: it may be the segment still being written).
	name := wal.SegmentName(1, 4, segSize)
	path := filepath.Join(pgdata, "pg_wal", name)
	os.WriteFile(path, testutil.FakeSegment(sysid, 1, 4, segSize), 0o600)
	os.WriteFile(filepath.Join(pgdata, "pg_wal", "archive_status", name+".done"), nil, 0o600)
	if err := agentsock.Call(ctx, sock, agentsock.Request{Op: "wal-push", Path: path}); err != nil {
		t.Fatalf("hand-off: %v", err)
	}
	if _, err := os.Stat(filepath.Join(repoDir, "c", "wal", name[:8], name)); err != nil {
		t.Fatalf("the daemon did not store %s: %v", name, err)
	}
	// Failures come back as errors, not as "no daemon".
	bad := filepath.Join(pgdata, "pg_wal", wal.SegmentName(1, 5, segSize))
	os.WriteFile(bad, []byte("short"), 0o600)
	os.WriteFile(filepath.Join(pgdata, "pg_wal", "archive_status", filepath.Base(bad)+".done"), nil, 0o600)
	err = agentsock.Call(ctx, sock, agentsock.Request{Op: "wal-push", Path: bad})
	if err == nil || errors.Is(err, agentsock.ErrNoDaemon) || !strings.Contains(err.Error(), "WAL file") {
		t.Fatalf("bad segment: %v", err)
	}
	// Marked neither ready nor done: refused, naming the file.
	unready := filepath.Join(pgdata, "pg_wal", wal.SegmentName(1, 7, segSize))
	os.WriteFile(unready, testutil.FakeSegment(sysid, 1, 7, segSize), 0o600)
	err = agentsock.Call(ctx, sock, agentsock.Request{Op: "wal-push", Path: unready})
	if err == nil || errors.Is(err, agentsock.ErrNoDaemon) || !strings.Contains(err.Error(), "not marked it ready") {
		t.Fatalf("a segment not marked ready: %v", err)
	}
	other := filepath.Join(t.TempDir(), name)
	err = agentsock.Call(ctx, sock, agentsock.Request{Op: "wal-push", Path: other})
	if err == nil || !strings.Contains(err.Error(), "not in this node's pg_wal") {
		t.Fatalf("foreign path: %v", err)
	}
	if err := agentsock.Call(ctx, sock, agentsock.Request{Op: "drop-tables"}); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Fatalf("unknown op: %v", err)
	}

	// The push-ahead loop picks up a ready segment by itself.
	next := wal.SegmentName(1, 6, segSize)
	os.WriteFile(filepath.Join(pgdata, "pg_wal", next), testutil.FakeSegment(sysid, 1, 6, segSize), 0o600)
	os.WriteFile(filepath.Join(pgdata, "pg_wal", "archive_status", next+".ready"), nil, 0o600)
	testutil.WaitFor(t, 30*time.Second, "push ahead of "+next, func() (bool, error) {
		_, err := os.Stat(filepath.Join(pgdata, "pg_wal", walship.MarkerDir, next))
		return err == nil, err
	})

	// A second daemon on the same socket refuses to start.
	if err := New(cfg, sh, log).Run(ctx); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("second daemon: %v", err)
	}
}
