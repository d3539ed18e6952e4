package orders

import (
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/wal"
)

// A real PostgreSQL 15 pg_controldata after `pg_ctl stop -m fast`; its
// pg_waldump shows the CHECKPOINT_SHUTDOWN record at 0/1500790 with
// len (rec/tot) 114/114, the next record starting at 0/1500808.
const controlShutDown = `pg_control version number:            1300
Database cluster state:               shut down
pg_control last modified:             Mon 01 Jan 2025 00:00:00 AM UTC
Latest checkpoint location:           0/1500790
Latest checkpoint's REDO location:    0/1500790
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Database block size:                  8192
WAL block size:                       8192
Bytes per WAL segment:                16777216
`

func TestParseShutdownCheckpoint(t *testing.T) {
	cd, err := parseShutdownCheckpoint(controlShutDown)
	if err != nil {
		t.Fatal(err)
	}
	if cd.checkpoint != 0x1500790 || cd.end != 0x1500790+114 || cd.timeline != 1 {
		t.Fatalf("got checkpoint %s end %s timeline %d", lsnText(cd.checkpoint), lsnText(cd.end), cd.timeline)
	}
	crashed := strings.Replace(controlShutDown, "shut down", "in production", 1)
	if _, err := parseShutdownCheckpoint(crashed); err == nil || !strings.Contains(err.Error(), "not clean") {
		t.Fatalf("a server not shut down cleanly: err %v", err)
	}
	bad := strings.Replace(controlShutDown, "0/1500790\n", "nonsense\n", 1)
	if _, err := parseShutdownCheckpoint(bad); err == nil {
		t.Fatal("a malformed LSN was accepted")
	}
}

func TestRecordEnd(t *testing.T) {
	const blk, seg = 8192, 16 << 20
	for _, c := range []struct {
		name       string
		start, end uint64
	}{
		{"within one page", 0x1500790, 0x1500790 + 114},
		{"crosses a page: short header", 0x2000 - 16, 0x2000 + 24 + 98},
		{"crosses a segment: long header", seg - 16, seg + 40 + 98},
		{"ends exactly at a page end", 0x2000 - 114, 0x2000},
	} {
		if got := recordEnd(c.start, 114, blk, seg); got != c.end {
			t.Errorf("%s: recordEnd(%s) = %s, want %s", c.name, lsnText(c.start), lsnText(got), lsnText(c.end))
		}
	}
	if v, err := wal.ParseLSN("16/B374D848"); err != nil || v.String() != "16/B374D848" {
		t.Fatalf("LSN round trip: %s %v", v, err)
	}
}

func lsnText(l uint64) string { return wal.LSN(l).String() }
