package repostat

import (
	"context"
	"testing"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/storage/s3store"
	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

// TestWALTimelineSkipped: a timeline can be skipped in the archive (a
// promoted node archived its history file and died before a segment; the
// next promotion takes the timeline after it) or have no keys at all there
// (its primary died before archiving anything). The reader follows the
// newest timeline all the same, on every kind of store.
func TestWALTimelineSkipped(t *testing.T) {
	for _, kind := range []string{"file", "generic", "s3"} {
		t.Run(kind, func(t *testing.T) {
			var st storage.ObjectStore
			switch kind {
			case "s3":
				if testing.Short() {
					t.Skip("starts versitygw")
				}
				srv := s3server.Start(t)
				srv.CreateBucket(t, "repostat")
				s3, err := s3store.New(t.Context(), s3store.Options{Bucket: "repostat", Prefix: "p", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true,
					AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, MaxAttempts: 2})
				if err != nil {
					t.Fatal(err)
				}
				st = s3
			default:
				fs, err := filestore.New(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				st = fs
				if kind == "generic" {
					st = &countingStore{ObjectStore: fs} // not a DirLister
				}
			}
			r := repo.Repo{Name: "local", Store: st}
			ctx := context.Background()
			put(t, st, repo.WALKey(cluster, segment(1, 5)))
			rd := New(cluster, []repo.Repo{r}, nil)
			rd.ReadOnce(ctx)
			if s := rd.Snapshots()[0]; s.WALName != segment(1, 5) {
				t.Fatalf("first round: %+v", s)
			}
			// Timeline 2: only its history file; timeline 3 goes on.
			put(t, st, repo.WALKey(cluster, "00000002.history"))
			put(t, st, repo.WALKey(cluster, "00000003.history"))
			put(t, st, repo.WALKey(cluster, segment(3, 6)))
			rd.ReadOnce(ctx)
			if s := rd.Snapshots()[0]; s.WALName != segment(3, 6) {
				t.Fatalf("after timeline 3 (2 has only its history): newest %s, want %s", s.WALName, segment(3, 6))
			}
			// Timeline 4 never reached the archive; 5 goes on.
			put(t, st, repo.WALKey(cluster, segment(5, 7)))
			rd.ReadOnce(ctx)
			if s := rd.Snapshots()[0]; s.WALName != segment(5, 7) {
				t.Fatalf("after timeline 5 (4 absent): newest %s, want %s", s.WALName, segment(5, 7))
			}
		})
	}
}

// TestWALNewestKeyGone: when the newest segment the reader remembers is no
// longer in the repository (deleted by hand, wal-repair, a repository
// emptied and archived into again), the reader lists the WAL again rather
// than reporting a segment that is not there and missing the WAL that is.
func TestWALNewestKeyGone(t *testing.T) {
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := repo.Repo{Name: "local", Store: fs}
	ctx := context.Background()
	put(t, fs, repo.WALKey(cluster, segment(2, 9)))
	rd := New(cluster, []repo.Repo{r}, nil)
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.WALName != segment(2, 9) {
		t.Fatalf("first round: %+v", s)
	}
	if err := fs.Delete(ctx, repo.WALKey(cluster, segment(2, 9))); err != nil {
		t.Fatal(err)
	}
	put(t, fs, repo.WALKey(cluster, segment(1, 3)))
	rd.ReadOnce(ctx)
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.WALName != segment(1, 3) {
		t.Fatalf("newest segment %s deleted, %s archived: the reader reports %s", segment(2, 9), segment(1, 3), s.WALName)
	}
}
