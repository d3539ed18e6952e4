package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestWALReceiverWithArchiveCommand runs `pgdr-agent run` with
// wal.receive enabled beside a primary whose archive_command is
// `pgdr-agent wal-push` (archive_timeout off): a trickle of commits
// reaches the repository as the receiver's partial object within about
// the upload interval, and switched segments are archived by the receiver
// and by archive_command without a single archive failure (the receiver's
// object is the one wal-push stores), with no gap in the archive.
func TestWALReceiverWithArchiveCommand(t *testing.T) {
	l := newLab(t, labOpts{})
	rewriteFile(t, l.cfg, "wal: {push_concurrency: 4, prefetch: 4}", "wal: {push_concurrency: 4, prefetch: 4, receive: {enabled: true, upload_interval: 200ms}}")
	logb := startDaemon(t, l, l.cfg)
	testutil.WaitFor(t, 30*time.Second, "the receiver streaming", func() (bool, error) {
		return strings.Contains(logb.String(), "WAL receiver streaming"), nil
	})
	l.pg.Exec(t, "CREATE TABLE trickle (i int)")
	for i := range 3 {
		l.pg.Exec(t, fmt.Sprintf("INSERT INTO trickle VALUES (%d)", i))
		seg := l.pg.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_flush_lsn())")
		key := filepath.Join(l.repoDir, filepath.FromSlash(repo.StreamPartialKey("main", seg)))
		before := time.Now()
		var last time.Time
		if st, err := os.Stat(key); err == nil {
			last = st.ModTime()
		}
		testutil.WaitFor(t, 10*time.Second, "a new partial object of "+seg, func() (bool, error) {
			st, err := os.Stat(key)
			return err == nil && st.ModTime().After(last), nil
		})
		t.Logf("commit %d: partial object of %s rewritten after %s", i, seg, time.Since(before).Round(time.Millisecond))
	}
	var names []string
	for range 4 {
		names = append(names, l.switchWAL(t))
	}
	l.waitArchived(t, names[len(names)-1], 60*time.Second)
	if n := l.pg.QueryString(t, "SELECT failed_count::text FROM pg_stat_archiver"); n != "0" {
		t.Fatalf("archive_command failed %s times:\n%s", n, tail(l.pg.Log(), 3000))
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(l.repoDir, "main", "wal", name[:8], name)); err != nil {
			t.Fatalf("%s not archived: %v", name, err)
		}
		// archive_command may archive a segment before the receiver's
		// next round finds it archived and deletes its partial object.
		testutil.WaitFor(t, 10*time.Second, "the partial object of the archived "+name+" deleted", func() (bool, error) {
			_, err := os.Stat(filepath.Join(l.repoDir, filepath.FromSlash(repo.StreamPartialKey("main", name))))
			return errors.Is(err, os.ErrNotExist), nil
		})
	}
	ls := walList(t, l.cfg)
	for _, r := range ls.Repos {
		for _, tl := range r.Timelines {
			if len(tl.Gaps) > 0 {
				t.Fatalf("the archive has gaps: %+v", tl)
			}
		}
	}
}
