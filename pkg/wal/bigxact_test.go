package wal

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestBigCommitRecordPostgres: a transaction creating 3,000 tables writes
// a commit record over keepLimit (its invalidations); the reader keeps
// its bytes, so XactEnd decodes it (before: no data, an error).
func TestBigCommitRecordPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	const segSize = 1 << 20
	c := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"--wal-segsize=1"},
		Conf:       map[string]string{"wal_keep_size": "'1GB'", "max_wal_size": "'1GB'", "autovacuum": "off", "checkpoint_timeout": "'1h'"},
	})
	c.Start(t)
	start, err := ParseLSN(c.QueryString(t, "SELECT pg_current_wal_insert_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(t, `DO $$ BEGIN FOR i IN 1..3000 LOOP EXECUTE format('CREATE TABLE big_%s (a int)', i); END LOOP; END $$`)
	xid := c.QueryString(t, "SELECT xmin::text FROM pg_class WHERE relname = 'big_1'")
	c.Exec(t, "SELECT pg_switch_wal()")
	walDir := filepath.Join(c.PGData, "pg_wal")
	src := func(_ context.Context, segNo uint64) (io.ReadCloser, error) {
		f, err := os.Open(filepath.Join(walDir, SegmentName(1, segNo, segSize)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNoSegment
		}
		return f, err
	}
	rr, err := NewRecordReader(src, segSize, start)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	for {
		rec, err := rr.Next(context.Background())
		if errors.Is(err, io.EOF) {
			at, why := rr.End()
			t.Fatalf("no commit of xid %s before the end at %s (%s)", xid, at, why)
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.RmID != RmXactID || strconv.FormatUint(uint64(rec.XID), 10) != xid {
			continue
		}
		e, ok, err := rec.XactEnd()
		if err != nil || !ok || !e.Commit {
			t.Fatalf("commit record of %d bytes at %s: %+v, %v, %v", rec.TotalLen, rec.LSN, e, ok, err)
		}
		if rec.TotalLen <= keepLimit {
			t.Fatalf("the commit record is %d bytes, not over %d: the test tests nothing", rec.TotalLen, keepLimit)
		}
		return
	}
}
