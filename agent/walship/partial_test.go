package walship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/objstream"
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

// TestPushPartialNeverShrinks: a shorter partial copy (a receiver
// restarted from an older position, a second receiver behind the first)
// leaves the longer verified copy in place.
func TestPushPartialNeverShrinks(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name := wal.SegmentName(1, 12, segSize)
	full := testutil.FakeSegment(sysid, 1, 12, segSize)
	if err := f.sh.PushPartial(ctx, name, full[:65536]); err != nil {
		t.Fatal(err)
	}
	if err := f.sh.PushPartial(ctx, name, full[:8192]); err != nil {
		t.Fatal(err)
	}
	if got := f.partialSize(t, name); got != 65536 {
		t.Fatalf("stored partial is %d bytes after a shorter upload, want 65536", got)
	}
	if err := f.sh.PushPartial(ctx, name, full[:100000]); err != nil {
		t.Fatal(err)
	}
	if got := f.partialSize(t, name); got != 100000 {
		t.Fatalf("stored partial is %d bytes after a longer upload, want 100000", got)
	}
	// WAL of a newer timeline under an older timeline's name is refused.
	newer := testutil.FakeSegment(sysid, 2, 12, segSize)
	if err := f.sh.PushPartial(ctx, name, newer[:8192]); err == nil || !strings.Contains(err.Error(), "timeline 2") {
		t.Fatalf("timeline-2 WAL under a timeline-1 name: %v", err)
	}
}

func (f *fixture) partialSize(t *testing.T, name string) int64 {
	t.Helper()
	rc, err := f.sh.Repos()[0].Store.Get(context.Background(), repo.StreamPartialKey("c1", name))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h, err := objstream.ReadHeader(rc)
	if err != nil {
		t.Fatal(err)
	}
	return h.PlainSize
}

// TestPushRefusesUnverifiableStoredCopy: with signing configured, an
// object already stored under the segment's key with the same plaintext
// but no acceptable signature (a writer without signing.key_file, a
// forger) is a conflict, not "already archived": no restore would accept
// it.
func TestPushRefusesUnverifiableStoredCopy(t *testing.T) {
	ctx := context.Background()
	key, _ := signingKey(t)
	f := newFixture(t, fmt.Sprintf("signing: {key_file: %s}\n", key))
	name, data := f.segment(t, 5)
	ucfg := *f.cfg
	ucfg.Signing.KeyFile = ""
	unsigned, err := New(ctx, &ucfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := unsigned.PushSegment(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	if err := f.sh.Push(ctx, filepath.Join(f.pgwal, name)); !errors.Is(err, ErrConflict) {
		t.Fatalf("wal-push over an unsigned stored copy: %v, want ErrConflict", err)
	}
	if err := f.sh.PushSegment(ctx, name, data); !errors.Is(err, ErrConflict) {
		t.Fatalf("PushSegment over an unsigned stored copy: %v, want ErrConflict", err)
	}
}

// TestConcurrentPushesOfOneNameEachChecked: a push of a name waiting for
// another push of the same name does not take that push's outcome for its
// own: different bytes are a conflict, identical bytes succeed.
func TestConcurrentPushesOfOneNameEachChecked(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	name, data := f.segment(t, 13)
	other := bytes.Clone(data)
	other[5000] ^= 1
	release := make(chan struct{})
	started := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- f.sh.pushes.do(ctx, name, func() error {
			close(started)
			<-release
			n, _ := wal.ParseName(name)
			var stored bool
			return f.sh.pushData(ctx, time.Now(), n, data, &stored)
		})
	}()
	<-started
	second := make(chan error, 1)
	go func() { second <- f.sh.PushSegment(ctx, name, other) }()
	// The second push waits for the first (it is in flight).
	select {
	case err := <-second:
		t.Fatalf("the second push did not wait for the first: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; !errors.Is(err, ErrConflict) {
		t.Fatalf("a push of different bytes waiting on the first: %v, want ErrConflict", err)
	}
}

// The receiver's sequence for a segment that completes: PushPartial
// (every interval), PushSegment, DeletePartial. With an async (DR)
// repository, PushSegment only queues the copy; DeletePartial removes the
// DR repository's partial at once would leave it, until the copier runs,
// holding neither the segment nor its partial: it keeps its partial.
func TestDeletePartialKeepsAsyncCopy(t *testing.T) {
	f := newFixture(t, "")
	dr := t.TempDir()
	state := t.TempDir()
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: dr, url: 'file://%s', mode: async}, {name: r1, url: 'file://%s'}]\nencryption: {identity_file: %s, recipients: [%s]}\nagent: {state_dir: %s}\n",
		f.pgdata, dr, f.repo, f.identity, f.cfg.Encryption.Recipients[0], state)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const segNo = 11
	name := wal.SegmentName(1, segNo, segSize)
	full := testutil.FakeSegment(sysid, 1, segNo, segSize)
	if err := sh.PushPartial(ctx, name, full[:segSize-8192]); err != nil {
		t.Fatal(err)
	}
	drPartial := filepath.Join(dr, filepath.FromSlash(repo.StreamPartialKey("c1", name)))
	testutil.WaitFor(t, 30*time.Second, "the partial in the DR repository", func() (bool, error) {
		_, err := os.Stat(drPartial)
		return err == nil, err
	})
	if err := sh.PushSegment(ctx, name, full); err != nil {
		t.Fatal(err)
	}
	if err := sh.DeletePartial(ctx, name); err != nil {
		t.Fatal(err)
	}
	_, perr := os.Stat(drPartial)
	_, serr := os.Stat(filepath.Join(dr, filepath.FromSlash(repo.WALKey("c1", name))))
	if perr != nil && serr != nil {
		t.Fatalf("the DR repository holds neither %s nor its partial (partial: %v; segment: %v): a restore from it ends a whole segment early", name, perr, serr)
	}
}
