package testutil

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// FakeSegment returns the bytes of a WAL segment that passes pgdr's header
// checks: a long page header (system identifier sysid, timeline tli, page
// address of segment segNo) followed by pseudo-random, partly repetitive
// bytes, for unit tests that need no PostgreSQL server.
func FakeSegment(sysid uint64, tli uint32, segNo uint64, segSize int) []byte {
	b := make([]byte, segSize)
	r := rand.New(rand.NewPCG(segNo, sysid))
	for i := 64; i < len(b); i += 8 {
		if (i/4096)%2 == 0 {
			binary.LittleEndian.PutUint64(b[i:], r.Uint64())
		} else {
			binary.LittleEndian.PutUint64(b[i:], uint64(i/4096))
		}
	}
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], 0x0002)
	le.PutUint32(b[4:], tli)
	le.PutUint64(b[8:], segNo*uint64(segSize))
	le.PutUint64(b[24:], sysid)
	le.PutUint32(b[32:], uint32(segSize))
	le.PutUint32(b[36:], 8192)
	return b
}

// FakePGData makes a directory that looks enough like a PostgreSQL data
// directory for WAL shipping: global/pg_control holding sysid, and pg_wal
// with archive_status.
func FakePGData(t testing.TB, sysid uint64) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"global", "pg_wal/archive_status"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctl := make([]byte, 8192)
	binary.LittleEndian.PutUint64(ctl, sysid)
	if err := os.WriteFile(filepath.Join(dir, "global", "pg_control"), ctl, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
