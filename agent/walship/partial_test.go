package walship

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/wal"
)

// TestPushSegmentThenArchiveCommand: a segment the receiver stored with
// PushSegment is the object wal-push stores, and wal-push of the same file
// afterwards finds it stored and writes nothing (the stored object is not
// rewritten); different content under the name is still a conflict.
func TestPushSegmentThenArchiveCommand(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name, data := f.segment(t, 9)
	if err := f.sh.PushSegment(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(f.repo, "c1", "wal", name[:8], name)
	st1, err := os.Stat(obj)
	if err != nil {
		t.Fatalf("PushSegment stored nothing at the wal-push key: %v", err)
	}
	if err := f.sh.Push(ctx, filepath.Join(f.pgwal, name)); err != nil {
		t.Fatalf("wal-push of the segment the receiver archived: %v", err)
	}
	st2, _ := os.Stat(obj)
	if !st2.ModTime().Equal(st1.ModTime()) || st2.Size() != st1.Size() {
		t.Fatal("wal-push rewrote the object the receiver stored")
	}
	got := filepath.Join(t.TempDir(), name)
	if err := f.sh.Fetch(ctx, name, got); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, data) {
		t.Fatal("the fetched segment differs from the pushed bytes")
	}
	other := bytes.Clone(data)
	other[4000] ^= 1
	if err := f.sh.PushSegment(ctx, name, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("different bytes under an archived name: %v, want ErrConflict", err)
	}
}

// TestPushPartial: the partial copy is stored under the stream key (not in
// the archive), replaced by a longer one, refused when it is not WAL of
// this cluster, and deleted.
func TestPushPartial(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	const segNo = 11
	name := wal.SegmentName(1, segNo, segSize)
	full := testutil.FakeSegment(sysid, 1, segNo, segSize)
	key := filepath.Join(f.repo, filepath.FromSlash(repo.StreamPartialKey("c1", name)))
	for _, n := range []int{8192, 65536} {
		if err := f.sh.PushPartial(ctx, name, full[:n]); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(key); err != nil {
			t.Fatalf("partial of %d bytes not at %s: %v", n, key, err)
		}
	}
	if f.stored(name) {
		t.Fatal("a partial copy was stored as the archived segment")
	}
	other := testutil.FakeSegment(sysid+1, 1, segNo, segSize)
	if err := f.sh.PushPartial(ctx, name, other[:8192]); err == nil {
		t.Fatal("a partial of another cluster's WAL was accepted")
	}
	if err := f.sh.PushPartial(ctx, name+".partial", full[:8192]); err == nil {
		t.Fatal("a partial under a non-segment name was accepted")
	}
	if err := f.sh.DeletePartial(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the partial copy is still there after DeletePartial: %v", err)
	}
	if err := f.sh.DeletePartial(ctx, name); err != nil {
		t.Fatalf("deleting a missing partial: %v", err)
	}
}
