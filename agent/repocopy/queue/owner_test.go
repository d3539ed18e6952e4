package queue

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// An entry added by root (a one-shot `pgdr-agent backup` or wal-push run
// by an administrator) into a queue directory of PostgreSQL's user goes to
// that user: the daemon, run as that user, must be able to read it, or it
// stays queued (and counted as lag) forever.
func TestAddAsRootGivesTheEntryToTheDirectorysOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Skip("no postgres user")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := filepath.Join(t.TempDir(), "repocopy", "dr")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	q, _ := Open(dir)
	if err := q.Add(Entry{Kind: KindObject, Key: "main/wal/00000001/000000010000000000000001"}); err != nil {
		t.Fatal(err)
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Fatalf("%d files", len(des))
	}
	fi, _ := os.Stat(filepath.Join(dir, des[0].Name()))
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
		t.Fatalf("before: the entry is owned by uid %d, the queue directory by %d (%s): the daemon run as %s cannot read it", st.Uid, uid, u.Username, u.Username)
	}
}
