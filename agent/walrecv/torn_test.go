package walrecv

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRestartRestreamsTornPage: a power loss left the last whole page of
// the partial spool file torn (its first 4 KiB block, with the page
// header, reached the disk, the second did not: zeros). The restarted
// receiver streams the segment again from its start, overwriting the file
// in place as pg_receivewal does, instead of trusting the page header:
// the spool file and the partial object end up PostgreSQL's own bytes.
func TestRestartRestreamsTornPage(t *testing.T) {
	e := newEnv(t, nil)
	e.pg.Exec(t, "SELECT pg_switch_wal()")
	_, stop := e.start(t, 200*time.Millisecond)
	e.pg.Exec(t, "INSERT INTO t (v) SELECT repeat('z', 500) FROM generate_series(1, 100)")
	l := e.commit(t, "a")
	e.waitPartial(t, l, 10*time.Second)
	stop()
	name := l.Segment(1, testSeg)
	path := filepath.Join(e.spool, name+partialSuffix)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2*pageSize {
		t.Fatalf("the spool file holds %d bytes, want at least two pages", len(b))
	}
	torn := len(b)/pageSize*pageSize - pageSize
	clear(b[torn+4096 : torn+pageSize])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	l2 := e.commit(t, "b")
	if l2.Segment(1, testSeg) != name {
		t.Fatalf("the second commit %s is in another segment than %s", l2, name)
	}
	e.start(t, 200*time.Millisecond)
	n := uint64(l2) % testSeg
	waitFor(t, 20*time.Second, "the spool file holds PostgreSQL's bytes up to the second commit", func() bool {
		got, err := readPrefix(e.spool, name, n)
		return err == nil && bytes.Equal(got, e.pgFile(t, name, int64(n)))
	})
	e.waitPartial(t, l2, 10*time.Second)
}
