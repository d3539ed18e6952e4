package walrecv

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/wal"
)

const seg = 16 << 20

func TestPlan(t *testing.T) {
	lsn := func(s string) wal.LSN { l, _ := wal.ParseLSN(s); return l }
	at := func(tli uint32, end string) spoolEnd {
		return spoolEnd{Has: true, TLI: tli, End: lsn(end), Raw: lsn(end)}
	}
	hist3 := []wal.HistoryEntry{{Timeline: 1, Switch: lsn("0/5800000")}, {Timeline: 2, Switch: lsn("0/7100028")}}
	for _, tc := range []struct {
		name   string
		sp     spoolEnd
		srvTLI uint32
		hist   []wal.HistoryEntry
		want   Start
		err    string
	}{
		{name: "empty spool starts at the server's segment", srvTLI: 1, want: Start{TLI: 1, LSN: lsn("0/9000000"), Fresh: true}},
		{name: "same timeline continues", sp: at(1, "0/8002000"), srvTLI: 1, want: Start{TLI: 1, LSN: lsn("0/8002000")}},
		{name: "old timeline before its switch is finished first", sp: at(1, "0/5000000"), srvTLI: 3, hist: hist3, want: Start{TLI: 1, LSN: lsn("0/5000000")}},
		{name: "at the switch: the next timeline from its segment", sp: at(1, "0/5800000"), srvTLI: 3, hist: hist3, want: Start{TLI: 2, LSN: lsn("0/5000000")}},
		{name: "past the switch: diverged bytes stay on the old timeline", sp: at(1, "0/5802000"), srvTLI: 3, hist: hist3, want: Start{TLI: 2, LSN: lsn("0/5000000"), Diverged: 0x2000}},
		{name: "the last ancestor leads to the server's timeline", sp: at(2, "0/7200000"), srvTLI: 3, hist: hist3, want: Start{TLI: 3, LSN: lsn("0/7000000"), Diverged: uint64(lsn("0/7200000") - lsn("0/7100028"))}},
		{name: "a branch the server never saw starts afresh", sp: at(2, "0/7200000"), srvTLI: 3, hist: hist3[:1], want: Start{TLI: 3, LSN: lsn("0/9000000"), Fresh: true}},
		{name: "a timeline that ended mid-page is complete", sp: spoolEnd{Has: true, TLI: 1, End: lsn("0/5800000"), Raw: lsn("0/5800028")}, srvTLI: 3,
			hist: []wal.HistoryEntry{{Timeline: 1, Switch: lsn("0/5800028")}, hist3[1]}, want: Start{TLI: 2, LSN: lsn("0/5000000")}},
		{name: "a server behind the spool is refused", sp: at(3, "0/7200000"), srvTLI: 2, err: "older than the spool's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.sp, tc.srvTLI, lsn("0/9123456"), tc.hist, seg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Plan = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	if got := AppName("pg-b1"); got != "pg-b1_walrecv" {
		t.Fatalf("AppName = %q", got)
	}
	long := strings.Repeat("n", 63)
	if got := AppName(long); len(got) != 63 || !strings.HasSuffix(got, AppNameSuffix) {
		t.Fatalf("AppName of a 63-byte name = %q (%d bytes)", got, len(got))
	}
	if got := DefaultSlot("PG-b1.eu"); got != "pgdr_pg_b1_eu" {
		t.Fatalf("DefaultSlot = %q", got)
	}
	if got := DefaultSlot(long); len(got) != 63 {
		t.Fatalf("DefaultSlot of a long name is %d bytes", len(got))
	}
}

func TestParseSegSize(t *testing.T) {
	for in, want := range map[string]uint64{"16MB": 16 << 20, "1MB": 1 << 20, "1GB": 1 << 30, "65536kB": 64 << 20} {
		if got, err := parseSegSize(in); err != nil || got != want {
			t.Errorf("parseSegSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "3MB", "512kB", "2GB", "x"} {
		if _, err := parseSegSize(in); err == nil {
			t.Errorf("parseSegSize(%q) accepted", in)
		}
	}
}

// TestSegWriter: WAL written across a segment boundary lands in two files
// named like pg_wal's, the first fsynced and reported complete; positions
// move as written and flushed; the spool's resume point is the newest
// file cut to a whole page, and a writer resumed there cuts the file.
func TestSegWriter(t *testing.T) {
	const ss = 1 << 20
	dir := t.TempDir()
	var done []string
	start := wal.LSN(3 * ss)
	w, err := newSegWriter(dir, ss, 2, start, func(n string) { done = append(done, n) })
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{7}, ss+10000)
	if err := w.write(start, data[:5000]); err != nil {
		t.Fatal(err)
	}
	if w.writePos() != start+5000 || w.flushPos() != start {
		t.Fatalf("positions %s/%s after a write", w.writePos(), w.flushPos())
	}
	if err := w.flush(); err != nil || w.flushPos() != start+5000 {
		t.Fatalf("flush: %v, at %s", err, w.flushPos())
	}
	if err := w.write(start+5000, data[5000:]); err != nil {
		t.Fatal(err)
	}
	first, second := wal.SegmentName(2, 3, ss), wal.SegmentName(2, 4, ss)
	if len(done) != 1 || done[0] != first {
		t.Fatalf("completed %v, want [%s]", done, first)
	}
	if name, fl := w.current(); name != second || fl != 0 {
		t.Fatalf("current %s %d", name, fl)
	}
	if err := w.write(start+ss+20000, []byte{1}); err == nil || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("a gap was accepted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); err != nil {
		t.Fatalf("the complete segment was not given its name: %v", err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	files, err := listSpool(dir, ss)
	if err != nil || len(files) != 2 || files[0].Name != first || !files[0].full(ss) || !files[1].Partial || files[1].Size != 10000 {
		t.Fatalf("spool %+v, %v", files, err)
	}
	os.WriteFile(filepath.Join(dir, "junk.tmp"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, wal.SegmentName(1, 9, ss)), make([]byte, 100), 0o600) // an older timeline, later segment
	files, _ = listSpool(dir, ss)
	end := resumePoint(files, ss)
	if !end.Has || end.TLI != 2 || end.End != wal.LSN(4*ss+8192) {
		t.Fatalf("resume point %+v", end)
	}
	w, err = newSegWriter(dir, ss, end.TLI, end.End, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if st, _ := os.Stat(filepath.Join(dir, second+partialSuffix)); st.Size() != 8192 {
		t.Fatalf("resumed file is %d bytes, want cut to 8192", st.Size())
	}
	if w.writePos() != end.End || w.flushPos() != end.End {
		t.Fatalf("resumed at %s/%s", w.writePos(), w.flushPos())
	}
}

// pages makes n WAL pages of segment segNo with sound page headers.
func pages(segNo uint64, ss uint64, n int) []byte {
	b := make([]byte, n*pageSize)
	for i := range n {
		p := b[i*pageSize:]
		binary.LittleEndian.PutUint16(p, wal.XLogPageMagic)
		binary.LittleEndian.PutUint64(p[8:], segNo*ss+uint64(i*pageSize))
		p[100] = byte(i + 1)
	}
	return b
}

// TestCheckSpool: a partial spool file whose pages stop having sound
// headers (the zeros a crash can leave past what was fsynced) is cut back
// to its sound prefix before anything resumes from it or uploads it; a
// complete file (renamed only once fsynced) is left alone, also with the
// header-less zero pages that follow an XLOG_SWITCH record.
func TestCheckSpool(t *testing.T) {
	const ss = 1 << 20
	dir := t.TempDir()
	switched := pages(5, ss, ss/pageSize)
	clear(switched[40*pageSize:]) // the padding after a switch
	part := pages(6, ss, 10)
	clear(part[4*pageSize : 5*pageSize]) // a page a crash left as zeros
	tail := pages(7, ss, 10)
	tail = append(tail, make([]byte, 3000)...) // zeros past the last page
	for name, b := range map[string][]byte{
		wal.SegmentName(1, 5, ss):                 switched,
		wal.SegmentName(1, 6, ss) + partialSuffix: part,
		wal.SegmentName(1, 7, ss) + partialSuffix: tail,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := listSpool(dir, ss)
	if err := checkSpool(dir, files, ss, nil); err != nil {
		t.Fatal(err)
	}
	files, _ = listSpool(dir, ss)
	got := map[uint64]int64{}
	for _, f := range files {
		got[f.SegNo] = f.Size
	}
	if got[5] != ss || got[6] != 4*pageSize || got[7] != 10*pageSize {
		t.Fatalf("sizes after the check: %v", got)
	}
}
