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

// uploadEnv is a shipper on a file:// repository for a cluster of sysid,
// and an empty spool.
func uploadEnv(t *testing.T, sysid uint64) (sh *walship.Shipper, repoDir, spool string) {
	t.Helper()
	pgdata := testutil.FakePGData(t, sysid)
	repoDir, spool = t.TempDir(), t.TempDir()
	cfg, err := config.Parse([]byte(fmt.Sprintf("cluster: c\nnode: {name: n}\npostgres: {pgdata: %s}\nrepos: [{url: 'file://%s'}]\nencryption: {disabled: true}\n", pgdata, repoDir)))
	if err != nil {
		t.Fatal(err)
	}
	sh, err = walship.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return sh, repoDir, spool
}

func inRepo(repoDir, key string) bool {
	_, err := os.Stat(filepath.Join(repoDir, filepath.FromSlash(key)))
	return err == nil
}

// TestUploadSkipsInvalidSegment: a complete spool segment that is not
// this cluster's (a spool left from an earlier initdb) is reported once
// and skipped (kept in the spool); the later segments and the segment
// being written are still uploaded.
func TestUploadSkipsInvalidSegment(t *testing.T) {
	const sysid, ss = 7300000000000000077, 1 << 20
	sh, repoDir, spool := uploadEnv(t, sysid)
	a, b, c := wal.SegmentName(1, 3, ss), wal.SegmentName(1, 4, ss), wal.SegmentName(1, 5, ss)
	files := map[string][]byte{
		a:                 testutil.FakeSegment(sysid+1, 1, 3, ss), // another cluster's
		b:                 testutil.FakeSegment(sysid, 1, 4, ss),
		c + partialSuffix: testutil.FakeSegment(sysid, 1, 5, ss)[:64<<10],
	}
	for n, data := range files {
		if err := os.WriteFile(filepath.Join(spool, n), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := New(Config{SpoolDir: spool}, Deps{Upload: sh, SystemID: func() (uint64, error) { return sysid, nil }})
	r.segSize, r.curName, r.curFlushed, r.st.Timeline = ss, c, 64<<10, 1
	for range 2 {
		r.uploadOnce(context.Background())
	}
	if !inRepo(repoDir, repo.WALKey("c", b)) {
		t.Fatal("the segment after another cluster's was not archived")
	}
	if !inRepo(repoDir, repo.StreamPartialKey("c", c)) {
		t.Fatal("the segment being written was not uploaded as a partial")
	}
	if s := r.Status(); s.UploadFailures != 1 {
		t.Fatalf("%d upload failures reported, want 1 (the invalid segment, once)", s.UploadFailures)
	}
	if _, err := os.Stat(filepath.Join(spool, a)); err != nil {
		t.Fatalf("the invalid segment was removed from the spool: %v", err)
	}
}

// TestUploadPartialAfterFailure: the segment being written is uploaded as
// a partial even while a complete segment before it cannot be archived.
func TestUploadPartialAfterFailure(t *testing.T) {
	const sysid, ss = 7300000000000000078, 1 << 20
	sh, repoDir, spool := uploadEnv(t, sysid)
	a, c := wal.SegmentName(1, 4, ss), wal.SegmentName(1, 5, ss)
	for n, data := range map[string][]byte{a: testutil.FakeSegment(sysid, 1, 4, ss), c + partialSuffix: testutil.FakeSegment(sysid, 1, 5, ss)[:64<<10]} {
		if err := os.WriteFile(filepath.Join(spool, n), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	up := &flakyUploader{Uploader: sh}
	r := New(Config{SpoolDir: spool}, Deps{Upload: &segmentsDown{up}})
	r.segSize, r.curName, r.curFlushed, r.st.Timeline = ss, c, 64<<10, 1
	r.uploadOnce(context.Background())
	if !inRepo(repoDir, repo.StreamPartialKey("c", c)) {
		t.Fatal("the segment being written was not uploaded as a partial while a complete one failed")
	}
}

// segmentsDown fails every PushSegment.
type segmentsDown struct{ Uploader }

func (segmentsDown) PushSegment(context.Context, string, []byte) error { return errRepoDown }

// TestUploadOldTimelineTail: the last, incomplete segment of an old
// timeline (its partial upload failed before the stream moved to the new
// primary's timeline) is still uploaded as a partial.
func TestUploadOldTimelineTail(t *testing.T) {
	const sysid, ss = 7300000000000000079, 1 << 20
	sh, repoDir, spool := uploadEnv(t, sysid)
	old, cur := wal.SegmentName(1, 5, ss), wal.SegmentName(2, 5, ss)
	seg := testutil.FakeSegment(sysid, 1, 5, ss)
	for n, data := range map[string][]byte{old + partialSuffix: seg[:96<<10], cur + partialSuffix: seg[:64<<10]} {
		if err := os.WriteFile(filepath.Join(spool, n), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := New(Config{SpoolDir: spool}, Deps{Upload: sh})
	r.segSize, r.curName, r.curFlushed, r.st.Timeline = ss, cur, 64<<10, 2
	r.uploadOnce(context.Background())
	if !inRepo(repoDir, repo.StreamPartialKey("c", old)) {
		t.Fatal("the old timeline's last segment was never uploaded")
	}
	if !inRepo(repoDir, repo.StreamPartialKey("c", cur)) {
		t.Fatal("the current segment was not uploaded")
	}
}

// TestUploadNoPartialOfCompleteSegment: the segment being written when the
// round began, complete in the spool by the time its partial would be
// uploaded, is not uploaded as a partial (it is archived; a partial object
// would outlive the archived segment) even while archiving it fails.
func TestUploadNoPartialOfCompleteSegment(t *testing.T) {
	const sysid, ss = 7300000000000000080, 1 << 20
	sh, repoDir, spool := uploadEnv(t, sysid)
	c := wal.SegmentName(1, 5, ss)
	if err := os.WriteFile(filepath.Join(spool, c), testutil.FakeSegment(sysid, 1, 5, ss), 0o600); err != nil {
		t.Fatal(err)
	}
	r := New(Config{SpoolDir: spool}, Deps{Upload: &segmentsDown{sh}})
	r.segSize, r.curName, r.curFlushed, r.st.Timeline = ss, c, 64<<10, 1
	r.uploadOnce(context.Background())
	if inRepo(repoDir, repo.StreamPartialKey("c", c)) {
		t.Fatal("a complete segment was uploaded as a partial")
	}
}
