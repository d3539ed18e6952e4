package wal

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// walWriter lays out WAL records in segments as PostgreSQL does, for tests
// that need no server: page headers, records spanning pages and segments,
// prev-links and CRCs.
type walWriter struct {
	segSize, pageSize uint64
	tli               uint32
	sysid             uint64
	segs              map[uint64][]byte
	pos, prev         uint64
	overwrite         bool // the next page header says XLP_FIRST_IS_OVERWRITE_CONTRECORD
	written           []Record
}

func newWALWriter(segSize, pageSize uint64, firstSeg uint64) *walWriter {
	return &walWriter{segSize: segSize, pageSize: pageSize, tli: 1, sysid: 7311234567890123456,
		segs: map[uint64][]byte{}, pos: firstSeg * segSize}
}

func (w *walWriter) bytesAt(pos uint64) []byte {
	seg := pos / w.segSize
	if w.segs[seg] == nil {
		w.segs[seg] = make([]byte, w.segSize)
	}
	return w.segs[seg][pos%w.segSize:]
}

// pageHeader writes the header of the page starting at pos and returns
// its size.
func (w *walWriter) pageHeader(pos uint64, info uint16, remLen uint32) uint64 {
	b := w.bytesAt(pos)
	le := binary.LittleEndian
	size := uint64(ShortHeaderSize)
	if w.overwrite {
		info |= xlpFirstIsOverwriteContRecord
		w.overwrite = false
	}
	if pos%w.segSize == 0 {
		info |= xlpLongHeader
		size = LongHeaderSize
		le.PutUint64(b[24:], w.sysid)
		le.PutUint32(b[32:], uint32(w.segSize))
		le.PutUint32(b[36:], uint32(w.pageSize))
	}
	le.PutUint16(b[0:], XLogPageMagic)
	le.PutUint16(b[2:], info)
	le.PutUint32(b[4:], w.tli)
	le.PutUint64(b[8:], pos)
	le.PutUint32(b[16:], remLen)
	return size
}

// record builds a record with the given payload (what follows the header).
func (w *walWriter) record(rmid, info uint8, xid uint32, payload []byte) []byte {
	rec := make([]byte, RecordHeaderSize+len(payload))
	le := binary.LittleEndian
	le.PutUint32(rec[0:], uint32(len(rec)))
	le.PutUint32(rec[4:], xid)
	le.PutUint64(rec[8:], w.prev)
	rec[16], rec[17] = info, rmid
	copy(rec[RecordHeaderSize:], payload)
	crc := crc32.Update(0, castagnoli, rec[RecordHeaderSize:])
	crc = crc32.Update(crc, castagnoli, rec[:20])
	le.PutUint32(rec[20:], crc)
	return rec
}

// put lays out rec at the insert position and returns the record as the
// reader should see it. With abort, only the part on the first page is
// written, and the next page header is an overwrite contrecord.
func (w *walWriter) put(rec []byte, abort bool) Record {
	if w.pos%w.pageSize == 0 {
		w.pos += w.pageHeader(w.pos, 0, 0)
	}
	start := w.pos
	tli := w.tli
	rest := rec
	for {
		room := w.pageSize - w.pos%w.pageSize
		n := min(uint64(len(rest)), room)
		copy(w.bytesAt(w.pos), rest[:n])
		rest = rest[n:]
		w.pos += n
		if len(rest) == 0 {
			break
		}
		if abort {
			w.overwrite = true
			return Record{}
		}
		w.pos += w.pageHeader(w.pos, xlpFirstIsContRecord, uint32(len(rest)))
	}
	w.pos = maxAlignUp(w.pos)
	le := binary.LittleEndian
	r := Record{LSN: LSN(start), End: LSN(w.pos), Prev: LSN(w.prev), TotalLen: uint32(len(rec)),
		XID: le.Uint32(rec[4:]), Info: rec[16], RmID: rec[17], Timeline: tli}
	if len(rec) <= keepLimit {
		r.Data = rec
	}
	if r.RmID == RmXLogID && r.Info&^xlrInfoMask == XLogSwitch {
		if rest := w.pos % w.segSize; rest != 0 {
			w.pos += w.segSize - rest
		}
		r.End = LSN(w.pos)
	}
	w.prev = start
	w.written = append(w.written, r)
	return r
}

func (w *walWriter) add(rmid, info uint8, payload []byte) Record {
	return w.put(w.record(rmid, info, 0, payload), false)
}

// padTo adds records that leave the insert position gap bytes before a
// multiple of unit.
func (w *walWriter) padTo(unit, gap uint64) {
	if w.pos%w.pageSize == 0 {
		w.pos += w.pageHeader(w.pos, 0, 0)
	}
	boundary := (w.pos/unit + 1) * unit
	if boundary-w.pos < gap+64 {
		boundary += unit
	}
	for boundary-w.pos > 4096 {
		// Come within the boundary's page first.
		n := boundary - w.pos - 3000
		n -= n/w.pageSize*ShortHeaderSize + 64
		w.add(21, 0, mainData(make([]byte, n)))
	}
	d := boundary - gap - w.pos
	n := d - RecordHeaderSize - 2
	if n >= 256 {
		n = d - RecordHeaderSize - 5
	}
	w.add(21, 0, mainData(make([]byte, n)))
	if w.pos != boundary-gap {
		panic(fmt.Sprintf("padTo: at %X, want %X", w.pos, boundary-gap))
	}
}

// mainData is a payload holding only main data.
func mainData(d []byte) []byte {
	if len(d) < 256 {
		return append([]byte{xlrBlockIDDataShort, byte(len(d))}, d...)
	}
	p := []byte{xlrBlockIDDataLong, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(p[1:], uint32(len(d)))
	return append(p, d...)
}

func restorePointPayload(name string, t time.Time) []byte {
	d := make([]byte, 72)
	pgEpoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	binary.LittleEndian.PutUint64(d, uint64(t.Sub(pgEpoch).Microseconds()))
	copy(d[8:], name)
	return mainData(d)
}

func (w *walWriter) source() SegmentSource {
	return func(_ context.Context, segNo uint64) (io.ReadCloser, error) {
		b, ok := w.segs[segNo]
		if !ok {
			return nil, fmt.Errorf("segment %d: %w", segNo, ErrNoSegment)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
}

// readAll reads every record from start and returns them (with copies of
// their data) and where the reading ended.
func readAll(t testing.TB, src SegmentSource, segSize uint64, start LSN) ([]Record, LSN, string, error) {
	t.Helper()
	r, err := NewRecordReader(src, segSize, start)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []Record
	for {
		rec, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			at, why := r.End()
			return out, at, why, nil
		}
		if err != nil {
			return out, 0, "", err
		}
		if rec.Data != nil {
			rec.Data = bytes.Clone(rec.Data)
		}
		out = append(out, rec)
	}
}

func sameRecords(t *testing.T, got, want []Record) {
	t.Helper()
	for i := 0; i < max(len(got), len(want)); i++ {
		if i >= len(got) || i >= len(want) {
			t.Fatalf("read %d records, wrote %d (first difference at #%d)", len(got), len(want), i)
		}
		g, w := got[i], want[i]
		if g.LSN != w.LSN || g.End != w.End || g.Prev != w.Prev || g.TotalLen != w.TotalLen || g.RmID != w.RmID || g.Info != w.Info || g.Timeline != w.Timeline || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("record #%d: read %+v, wrote %+v", i, summary(g), summary(w))
		}
	}
}

func summary(r Record) string {
	return fmt.Sprintf("{lsn %s end %s prev %s len %d rmid %d info %#x tli %d data %d}", r.LSN, r.End, r.Prev, r.TotalLen, r.RmID, r.Info, r.Timeline, len(r.Data))
}

// buildSynthetic writes WAL with every layout the reader must handle.
func buildSynthetic(t testing.TB) (*walWriter, []RestorePoint) {
	const segSize, pageSize = 1 << 20, 8192
	w := newWALWriter(segSize, pageSize, 3)
	var rps []RestorePoint
	at := time.Date(2026, 11, 26, 8, 17, 0, 123456000, time.UTC)
	rp := func(name string) {
		rec := w.add(RmXLogID, XLogRestorePoint, restorePointPayload(name, at))
		rps = append(rps, RestorePoint{Name: name, Time: at, LSN: rec.LSN, End: rec.End, Timeline: w.tli})
		at = at.Add(time.Second)
	}
	// A segment that begins with the end of a record from the segment
	// before (not in the source): the reader skips it.
	w.pos = 4*segSize - 304
	w.prev = 3*segSize + 100
	w.put(w.record(10, 0, 7, mainData(make([]byte, 3*pageSize))), false)
	delete(w.segs, 3)
	w.written = nil
	// xl_prev of the first record read cannot be checked exactly.
	w.add(1, 0, mainData([]byte("first")))
	rp("plain")
	w.padTo(pageSize, 48) // the body crosses the page boundary
	rp("body-split")
	w.padTo(pageSize, 16) // the header crosses the page boundary
	rp("header-split")
	// A record with block references, an origin and a top-level XID.
	var p []byte
	p = append(p, 0, bkpBlockHasImage|bkpBlockHasData, 3, 0) // block 0: 3 bytes of data
	p = append(p, 100, 0, 10, 0, bkpImageHasHole)            // image: 100 bytes, hole at 10
	p = append(p, 1, 0, 0, 0, 5, 0, 0, 0, 16, 64, 0, 0)      // RelFileNode
	p = append(p, 9, 0, 0, 0)                                // block number
	p = append(p, 2, bkpBlockSameRel|bkpBlockHasData, 2, 0, 10, 0, 0, 0)
	p = append(p, xlrBlockIDOrigin, 1, 0, xlrBlockIDTopLevelXID, 44, 3, 0, 0)
	main := []byte("the main data")
	p = append(p, xlrBlockIDDataShort, byte(len(main)))
	p = append(p, make([]byte, 100)...)    // image
	p = append(p, 'a', 'b', 'c', 'd', 'e') // block 0 and block 2 data
	p = append(p, main...)
	blocks := w.add(10, 0x20, p)
	if d, err := blocks.MainData(); err != nil || string(d) != string(main) {
		t.Fatalf("MainData with blocks = %q, %v", d, err)
	}
	// A record of 2.5 MiB across three segments (not kept, but checked).
	w.add(21, 0, mainData(make([]byte, 5<<19)))
	rp("after-big")
	w.padTo(segSize, 8) // the header crosses into the next segment
	rp("segment-split")
	// A record lost after its first page, overwritten from the next.
	w.padTo(pageSize, 200)
	w.put(w.record(10, 0, 0, mainData(make([]byte, 1000))), true)
	rp("after-overwrite")
	w.add(RmXLogID, XLogSwitch, nil)
	rp("after-switch")
	for i := range 40 {
		w.add(uint8(i%20), 0, mainData(bytes.Repeat([]byte{byte(i)}, i*37)))
	}
	rp("last")
	return w, rps
}

func TestRecordReaderSynthetic(t *testing.T) {
	w, rps := buildSynthetic(t)
	got, end, why, err := readAll(t, w.source(), w.segSize, LSN(4*w.segSize))
	if err != nil {
		t.Fatal(err)
	}
	// The first record's prev-link points into the missing segment.
	sameRecords(t, got, w.written)
	if end != LSN(w.pos) || !strings.Contains(why, "magic") && !strings.Contains(why, "zeros") {
		t.Fatalf("reading ended at %s (%s), want the end of the written WAL %s", end, why, LSN(w.pos))
	}
	var found []RestorePoint
	for _, rec := range got {
		if rec.IsRestorePoint() {
			rp, err := rec.RestorePoint()
			if err != nil {
				t.Fatal(err)
			}
			found = append(found, rp)
		}
	}
	if fmt.Sprint(found) != fmt.Sprint(rps) {
		t.Fatalf("restore points:\n%v\nwant\n%v", found, rps)
	}
	for _, rp := range rps {
		crossed := uint64(rp.LSN)/8192 != (uint64(rp.End)-1)/8192
		if strings.Contains(rp.Name, "split") && !crossed {
			t.Errorf("restore point %s at %s..%s does not cross a page", rp.Name, rp.LSN, rp.End)
		}
	}

	// Starting at a record reads from it; starting between records reads
	// from the next one.
	for i, want := range w.written {
		if i%7 != 0 {
			continue
		}
		for _, start := range []LSN{want.LSN, want.LSN - 1} {
			got, _, _, err := readAll(t, w.source(), w.segSize, start)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 || got[0].LSN != want.LSN || len(got) != len(w.written)-i {
				t.Fatalf("from %s: %d records, first %v; want %d from %s", start, len(got), got[:min(1, len(got))], len(w.written)-i, want.LSN)
			}
		}
	}
}

// TestRecordReaderEnds: damaged or missing WAL ends the reading at the
// first bad record, without an error.
func TestRecordReaderEnds(t *testing.T) {
	w, _ := buildSynthetic(t)
	start := LSN(4 * w.segSize)
	// A small record, on one page, among the last ones.
	var victim Record
	for _, rec := range w.written[len(w.written)-30:] {
		if rec.TotalLen <= 200 && uint64(rec.LSN)/w.pageSize == uint64(rec.End-1)/w.pageSize {
			victim = rec
			break
		}
	}
	if victim.LSN == 0 {
		t.Fatal("no record to damage")
	}
	clone := func() *walWriter {
		c := *w
		c.segs = map[uint64][]byte{}
		for k, v := range w.segs {
			c.segs[k] = bytes.Clone(v)
		}
		return &c
	}
	for _, tc := range []struct {
		what   string
		damage func(c *walWriter)
		reason string
	}{
		{"flipped data byte", func(c *walWriter) { c.bytesAt(uint64(victim.LSN) + uint64(victim.TotalLen) - 1)[0] ^= 1 }, "CRC"},
		{"wrong prev-link", func(c *walWriter) {
			b := c.bytesAt(uint64(victim.LSN) + 8)
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)-8)
		}, "prev-link"},
		{"zeroed record", func(c *walWriter) { clear(c.bytesAt(uint64(victim.LSN))[:8]) }, "zeros"},
		{"zeroed page", func(c *walWriter) {
			p := uint64(victim.LSN) &^ (c.pageSize - 1)
			clear(c.bytesAt(p)[:c.pageSize])
		}, "magic"},
		{"recycled page", func(c *walWriter) {
			p := uint64(victim.LSN) &^ (c.pageSize - 1)
			binary.LittleEndian.PutUint64(c.bytesAt(p)[8:], p-c.segSize)
		}, "page address"},
		{"missing segment", func(c *walWriter) { delete(c.segs, uint64(victim.LSN)/c.segSize) }, "not available"},
		{"truncated segment", func(c *walWriter) {
			seg := uint64(victim.LSN) / c.segSize
			c.segs[seg] = c.segs[seg][:uint64(victim.LSN)%c.segSize+10]
		}, "ends before"},
	} {
		c := clone()
		tc.damage(c)
		got, end, why, err := readAll(t, c.source(), c.segSize, start)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if len(got) == 0 || got[len(got)-1].LSN >= victim.LSN {
			t.Fatalf("%s: read %d records up to %v, want them to stop before %s", tc.what, len(got), got[len(got)-1].LSN, victim.LSN)
		}
		if !strings.Contains(why, tc.reason) || end > victim.LSN {
			t.Fatalf("%s: ended at %s (%s), want %q at or before %s", tc.what, end, why, tc.reason, victim.LSN)
		}
		sameRecords(t, got, w.written[:len(got)])
	}

	// A read error of the source is an error, not the end of WAL.
	failing := func(ctx context.Context, segNo uint64) (io.ReadCloser, error) {
		rc, err := w.source()(ctx, segNo)
		if err != nil || segNo != uint64(victim.LSN)/w.segSize {
			return rc, err
		}
		return io.NopCloser(io.MultiReader(io.LimitReader(rc, int64(w.segSize/2)), errReader{})), nil
	}
	if _, _, _, err := readAll(t, failing, w.segSize, start); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a failing source: %v", err)
	}
	// WAL of another PostgreSQL version is an error.
	c := clone()
	binary.LittleEndian.PutUint16(c.bytesAt(uint64(start)), 0xD113)
	if _, _, _, err := readAll(t, c.source(), c.segSize, start); err == nil || !strings.Contains(err.Error(), "PostgreSQL 15") {
		t.Fatalf("PostgreSQL 16 WAL: %v", err)
	}
	if _, err := NewRecordReader(w.source(), 3<<20, 0); err == nil {
		t.Fatal("a segment size that is not a power of two was accepted")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("object damaged") }

// TestRecordReaderGarbage: random damage, truncation and garbage never
// make the reader panic or loop, and what it returns is valid WAL.
func TestRecordReaderGarbage(t *testing.T) {
	w, _ := buildSynthetic(t)
	rng := rand.New(rand.NewPCG(1, 2))
	n := 120
	if testing.Short() {
		n = 40
	}
	for i := range n {
		c := map[uint64][]byte{}
		for k, v := range w.segs {
			c[k] = bytes.Clone(v)
		}
		for k, seg := range c {
			switch rng.IntN(4) {
			case 0: // flip bytes, mostly where records are
				for range 1 + rng.IntN(20) {
					off := rng.IntN(len(seg))
					if rng.IntN(2) == 0 {
						off = rng.IntN(min(len(seg), 64<<10))
					}
					seg[off] ^= byte(1 + rng.IntN(255))
				}
			case 1: // truncate
				c[k] = seg[:rng.IntN(len(seg))]
			case 2: // garbage pages that still look like WAL pages
				for range 1 + rng.IntN(5) {
					p := uint64(rng.IntN(len(seg))) &^ (w.pageSize - 1)
					for j := p + ShortHeaderSize; j < p+w.pageSize && j < uint64(len(seg)); j++ {
						seg[j] = byte(rng.Uint32())
					}
					le := binary.LittleEndian
					le.PutUint16(seg[p+2:], uint16(rng.IntN(16)))
					le.PutUint32(seg[p+16:], rng.Uint32()%(3*uint32(w.pageSize)))
				}
			}
		}
		src := func(_ context.Context, segNo uint64) (io.ReadCloser, error) {
			b, ok := c[segNo]
			if !ok {
				return nil, ErrNoSegment
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}
		// Errors (a damaged long header naming another cluster) are
		// allowed; panics and endless loops are not.
		got, _, _, _ := readAll(t, src, w.segSize, LSN(4*w.segSize))
		for j, rec := range got {
			if j > 0 && (rec.LSN < got[j-1].End || rec.Prev != got[j-1].LSN) {
				t.Fatalf("iteration %d: record %d at %s does not follow %s", i, j, rec.LSN, got[j-1].LSN)
			}
			if rec.Data != nil {
				rec.MainData()
				if rec.IsRestorePoint() {
					rec.RestorePoint()
				}
			}
		}
	}
}

// FuzzRecordReader feeds arbitrary bytes as one WAL segment (after a
// valid first page) and as a record's data.
func FuzzRecordReader(f *testing.F) {
	w, _ := buildSynthetic(f)
	seg := w.segs[4]
	f.Add(seg[:3*8192])
	f.Add(seg[8192 : 3*8192])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		data := append(bytes.Clone(seg[:8192]), b...)
		src := func(_ context.Context, segNo uint64) (io.ReadCloser, error) {
			if segNo != 4 {
				return nil, ErrNoSegment
			}
			return io.NopCloser(bytes.NewReader(data)), nil
		}
		readAll(t, src, w.segSize, LSN(4*w.segSize))
		rec := Record{LSN: 1, TotalLen: uint32(len(b)), Data: b, RmID: RmXLogID, Info: XLogRestorePoint}
		rec.MainData()
		rec.RestorePoint()
	})
}

// TestRecordReaderPostgres reads WAL written by a real PostgreSQL 15 (1 MiB
// segments) holding restore points laid across page and segment
// boundaries, a record spanning segments and a WAL switch, and checks
// every record against pg_waldump and every restore point against what
// pg_create_restore_point returned.
func TestRecordReaderPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	const segSize = 1 << 20
	c := pgtest.New(t, pgtest.Options{
		InitdbArgs: []string{"--wal-segsize=1"},
		Conf:       map[string]string{"wal_keep_size": "'1GB'", "max_wal_size": "'1GB'", "autovacuum": "off", "checkpoint_timeout": "'1h'"},
	})
	c.Start(t)
	c.Exec(t, `CREATE FUNCTION rp_before(rp text, boundary pg_lsn, gap int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  d int;
  s int;
BEGIN
  -- A logical message of d bytes (header 24, data header 2 or 5,
  -- xl_logical_message 24, prefix 'p' 2) leaves the insert position gap
  -- bytes before boundary; the restore point goes there.
  d := (boundary - pg_current_wal_insert_lsn())::int - gap;
  IF d < 64 THEN
    RETURN NULL;
  END IF;
  s := d - 52;
  IF s + 26 > 255 THEN
    s := d - 55;
  END IF;
  PERFORM pg_logical_emit_message(false, 'p', repeat('x', s));
  RETURN pg_create_restore_point(rp)::text;
END $$`)
	lsnNum := func(s string) uint64 {
		l, err := ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		return uint64(l)
	}
	insertLSN := func() uint64 { return lsnNum(c.QueryString(t, "SELECT pg_current_wal_insert_lsn()::text")) }
	c.Exec(t, "CREATE TABLE t(i int)")
	startLSN := LSN(insertLSN() &^ (segSize - 1))
	type made struct {
		name      string
		end       LSN
		unit, gap uint64
	}
	var points []made
	// place creates a restore point starting gap bytes before the next
	// multiple of unit, retrying when other WAL got in between.
	place := func(base string, unit, gap uint64) {
		name := base
		for attempt := range 20 {
			cur := insertLSN()
			boundary := (cur/unit + 1) * unit
			if boundary-cur > 8192-100 {
				// Come within the last page first.
				n := boundary - cur - 4000
				n -= n / 8192 * 24
				c.Exec(t, fmt.Sprintf("SELECT pg_logical_emit_message(false, 'f', repeat('y', %d))", n))
				continue
			}
			if boundary-cur < 200 {
				c.Exec(t, "SELECT pg_logical_emit_message(false, 'f', repeat('y', 300))")
				continue
			}
			end := c.QueryString(t, "SELECT coalesce(rp_before($1, $2::pg_lsn, $3), '')", name, LSN(boundary).String(), int(gap))
			if end == "" {
				continue
			}
			e := lsnNum(end)
			// A 98-byte record, 104 with alignment, plus the page header
			// it crosses.
			hdr := uint64(24)
			if boundary%segSize == 0 {
				hdr = 40
			}
			if e == boundary-gap+104+hdr {
				points = append(points, made{name, LSN(e), unit, gap})
				return
			}
			// Other WAL came in between: the restore point exists, but
			// not where wanted. Try again under another name.
			t.Logf("%s: attempt %d ended at %s, not %d bytes before %s", name, attempt, end, gap, LSN(boundary))
			points = append(points, made{name: name, end: LSN(e)})
			name = fmt.Sprintf("%s (%d)", base, attempt+2)
		}
		t.Fatalf("could not place restore point %s %d bytes before a multiple of %d", base, gap, unit)
	}
	plain := func(name string) {
		points = append(points, made{name: name, end: LSN(lsnNum(c.QueryString(t, "SELECT pg_create_restore_point($1)::text", name)))})
	}
	before := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	plain("rp plain")
	c.Exec(t, "INSERT INTO t SELECT generate_series(1, 1000)")
	place("rp body across a page", 8192, 48)
	place("rp header across a page", 8192, 16)
	c.Exec(t, "SELECT pg_logical_emit_message(false, 'big', repeat('z', 2621440))") // 2.5 MiB: three segments
	plain("rp after a big record")
	place("rp header across a segment", segSize, 8)
	place("rp body across a segment", segSize, 56)
	c.Exec(t, "SELECT pg_switch_wal()")
	plain("rp after a switch")
	plain("rp-63-" + strings.Repeat("x", 57)) // the longest name
	after := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	c.Stop(t, "fast")

	pgwal := filepath.Join(c.PGData, "pg_wal")
	src := func(_ context.Context, segNo uint64) (io.ReadCloser, error) {
		f, err := os.Open(filepath.Join(pgwal, SegmentName(1, segNo, segSize)))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", ErrNoSegment, err)
		}
		return f, err
	}
	got, end, why, err := readAll(t, src, segSize, startLSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read %d records from %s, WAL ended at %s: %s", len(got), startLSN, end, why)

	// Every record, as pg_waldump sees it.
	dump, dumpEnd := waldump(t, c, pgwal, startLSN)
	if dumpEnd != end {
		t.Errorf("WAL ended at %s, pg_waldump says at %s", end, dumpEnd)
	}
	if len(dump) != len(got) {
		t.Errorf("read %d records, pg_waldump %d", len(got), len(dump))
	}
	for i := range min(len(dump), len(got)) {
		g, d := got[i], dump[i]
		if g.LSN != d.lsn || g.Prev != d.prev || g.TotalLen != d.totLen || g.RmID != d.rmid {
			t.Fatalf("record #%d: read %s, pg_waldump %+v", i, summary(g), d)
		}
		if g.IsRestorePoint() != strings.HasPrefix(d.desc, "RESTORE_POINT ") {
			t.Fatalf("record #%d at %s: restore point %v, pg_waldump says %q", i, g.LSN, g.IsRestorePoint(), d.desc)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	tb, _ := time.Parse(time.RFC3339Nano, before)
	ta, _ := time.Parse(time.RFC3339Nano, after)
	var rps []RestorePoint
	for _, rec := range got {
		if rec.IsRestorePoint() {
			rp, err := rec.RestorePoint()
			if err != nil {
				t.Fatal(err)
			}
			rps = append(rps, rp)
		}
	}
	if len(rps) != len(points) {
		t.Fatalf("found %d restore points %v, made %d", len(rps), rps, len(points))
	}
	crossPage, crossSeg := 0, 0
	for i, p := range points {
		rp := rps[i]
		if rp.Name != p.name || rp.End != p.end || rp.Timeline != 1 || rp.Time.Before(tb) || rp.Time.After(ta) {
			t.Errorf("restore point #%d: read %q at %s..%s (%s, timeline %d); made %q ending at %s between %s and %s",
				i, rp.Name, rp.LSN, rp.End, rp.Time.Format(time.RFC3339Nano), rp.Timeline, p.name, p.end, before, after)
		}
		first, last := uint64(rp.LSN), uint64(rp.End)-1
		if first/8192 != last/8192 {
			crossPage++
		}
		if first/segSize != last/segSize {
			crossSeg++
		}
		if p.unit != 0 && (uint64(rp.LSN)/p.unit+1)*p.unit-uint64(rp.LSN) != p.gap {
			t.Errorf("restore point %q at %s is not %d bytes before a multiple of %d", rp.Name, rp.LSN, p.gap, p.unit)
		}
	}
	if crossPage < 4 || crossSeg < 2 {
		t.Errorf("%d restore points cross a page and %d a segment, want 4 and 2", crossPage, crossSeg)
	}

	// Starting at a restore point gives it first.
	from, _, _, err := readAll(t, src, segSize, rps[4].LSN)
	if err != nil || len(from) == 0 || from[0].LSN != rps[4].LSN {
		t.Fatalf("reading from %s: %d records, %v", rps[4].LSN, len(from), err)
	}

	// Damaged copies of the real segments end the reading or fail it, but
	// never panic.
	first := uint64(startLSN) / segSize
	orig := map[uint64][]byte{}
	for s := first; ; s++ {
		b, err := os.ReadFile(filepath.Join(pgwal, SegmentName(1, s, segSize)))
		if err != nil {
			break
		}
		orig[s] = b
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 40 {
		segs := map[uint64][]byte{}
		for k, v := range orig {
			v = bytes.Clone(v)
			for range rng.IntN(10) {
				v[rng.IntN(256<<10)] ^= byte(1 + rng.IntN(255))
			}
			segs[k] = v
		}
		readAll(t, func(_ context.Context, segNo uint64) (io.ReadCloser, error) {
			b, ok := segs[segNo]
			if !ok {
				return nil, ErrNoSegment
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}, segSize, startLSN)
	}
}

type dumpRecord struct {
	lsn, prev LSN
	totLen    uint32
	rmid      uint8
	desc      string
}

// rmgrIDs are PostgreSQL 15's resource manager names, as pg_waldump prints them.
var rmgrIDs = map[string]uint8{"XLOG": 0, "Transaction": 1, "Storage": 2, "CLOG": 3, "Database": 4, "Tablespace": 5,
	"MultiXact": 6, "RelMap": 7, "Standby": 8, "Heap2": 9, "Heap": 10, "Btree": 11, "Hash": 12, "Gin": 13, "Gist": 14,
	"Sequence": 15, "SPGist": 16, "BRIN": 17, "CommitTs": 18, "ReplicationOrigin": 19, "Generic": 20, "LogicalMessage": 21}

var dumpLine = regexp.MustCompile(`^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*\d+, lsn: ([0-9A-F]+/[0-9A-F]+), prev ([0-9A-F]+/[0-9A-F]+), desc: (.*)$`)

var dumpEnd = regexp.MustCompile(`invalid record length at ([0-9A-F]+/[0-9A-F]+)`)

// waldump runs pg_waldump over dir from start and parses its records and
// where it found the end of valid WAL.
func waldump(t *testing.T, c *pgtest.Cluster, dir string, start LSN) ([]dumpRecord, LSN) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.Command(ctx, "pg_waldump", "-p", dir, "-s", start.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && !strings.Contains(stderr.String(), "error in WAL record") {
		// pg_waldump exits 1 at the end of valid WAL; anything else is a failure.
		t.Fatalf("pg_waldump: %v\n%s", err, stderr.String())
	}
	t.Logf("pg_waldump: %s", strings.TrimSpace(stderr.String()))
	var end LSN
	if m := dumpEnd.FindStringSubmatch(stderr.String()); m != nil {
		end, _ = ParseLSN(m[1])
	}
	var recs []dumpRecord
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 64<<20) // logical messages' payloads are printed in hex
	for sc.Scan() {
		m := dumpLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("pg_waldump line not understood: %q", sc.Text())
		}
		rmid, ok := rmgrIDs[m[1]]
		if !ok {
			t.Fatalf("pg_waldump: unknown resource manager %q", m[1])
		}
		var tot uint32
		fmt.Sscan(m[2], &tot)
		lsn, _ := ParseLSN(m[3])
		prev, _ := ParseLSN(m[4])
		recs = append(recs, dumpRecord{lsn: lsn, prev: prev, totLen: tot, rmid: rmid, desc: m[5]})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading pg_waldump's output: %v", err)
	}
	return recs, end
}
