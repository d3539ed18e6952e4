package wal

import (
	"encoding/binary"
	"testing"
	"time"
)

// mainOnly is a record payload of main data alone (XLR_BLOCK_ID_DATA_SHORT).
func mainOnly(data []byte) []byte {
	return append([]byte{xlrBlockIDDataShort, byte(len(data))}, data...)
}

// xactData is xl_xact_commit/abort's main data: xact_time, xinfo and the
// parts xinfo says follow.
func xactData(us int64, xinfo uint32, parts ...[]byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint64(nil, uint64(us))
	b = le.AppendUint32(b, xinfo)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u32s(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// TestXactEnd: commits, aborts and prepared ends decode their xid,
// subtransactions and time; other records are not ends; truncated main
// data is an error, never a panic.
func TestXactEnd(t *testing.T) {
	w := newWALWriter(1<<20, 8192, 1)
	const us = 817_000_000_000_000 // 2025-11-20 ...
	when := pgTime(us)
	rec := func(info uint8, xid uint32, data []byte) Record {
		return w.put(w.record(RmXactID, info, xid, mainOnly(data)), false)
	}
	dbinfo := u32s(5, 1663)
	for _, tc := range []struct {
		name    string
		r       Record
		ok      bool
		wantErr bool
		want    XactEnd
	}{
		{"#1 commit with subtransactions, relfilenodes and invalidations", rec(xactHasInfo|xactCommit, 740,
			xactData(us, xinfoHasDBInfo|xinfoHasSubxacts|xinfoHasRelFiles|xinfoHasInvals, dbinfo, u32s(2, 741, 742), u32s(1, 1663, 5, 16384), u32s(1, 0, 0, 0, 0))),
			true, false, XactEnd{Commit: true, XID: 740, SubXIDs: []uint32{741, 742}, Time: when}},
		{"#2 commit without xinfo", w.put(w.record(RmXactID, xactCommit, 750, mainOnly(binary.LittleEndian.AppendUint64(nil, us))), false),
			true, false, XactEnd{Commit: true, XID: 750, Time: when}},
		{"#3 abort of a subtransaction", rec(xactHasInfo|xactAbort, 743, xactData(us, 0)), true, false, XactEnd{XID: 743, Time: when}},
		{"#4 commit prepared: the prepared xid", rec(xactHasInfo|xactCommitPrepared, 0, xactData(us, xinfoHasDBInfo|xinfoHasTwoPhase, dbinfo, u32s(760))),
			true, false, XactEnd{Commit: true, Prepared: true, XID: 760, Time: when}},
		{"#5 prepare: not an end", rec(xactPrepare, 770, xactData(us, 0)), false, false, XactEnd{}},
		{"#6 subxact count past the data", rec(xactHasInfo|xactCommit, 780, xactData(us, xinfoHasSubxacts, u32s(1000, 1))), false, true, XactEnd{}},
		{"#7 no xact_time", rec(xactCommit, 790, []byte{1, 2, 3}), false, true, XactEnd{}},
		{"#8 negative count", rec(xactHasInfo|xactCommit, 791, xactData(us, xinfoHasRelFiles, u32s(0xFFFFFFFF))), false, true, XactEnd{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := tc.r.XactEnd()
			if (err != nil) != tc.wantErr || ok != tc.ok {
				t.Fatalf("XactEnd = %+v, %v, %v", got, ok, err)
			}
			if !ok {
				return
			}
			if got.Commit != tc.want.Commit || got.Prepared != tc.want.Prepared || got.XID != tc.want.XID ||
				!got.Time.Equal(tc.want.Time) || len(got.SubXIDs) != len(tc.want.SubXIDs) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			for i := range got.SubXIDs {
				if got.SubXIDs[i] != tc.want.SubXIDs[i] {
					t.Errorf("subxids %v, want %v", got.SubXIDs, tc.want.SubXIDs)
				}
			}
		})
	}
	if when.Before(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("test time %s", when)
	}
}

// TestRowChange: heap records give their operation, row count and
// relation (block 0's RelFileNode); a super-delete undoes an insert.
func TestRowChange(t *testing.T) {
	w := newWALWriter(1<<20, 8192, 1)
	le := binary.LittleEndian
	block0 := func(main []byte) []byte {
		// block 0: fork 0, no image, no data; RelFileNode; block 7; then main data.
		b := []byte{0, 0, 0, 0}
		b = append(b, u32s(1663, 5, 16384)...)
		b = le.AppendUint32(b, 7)
		return append(b, mainOnly(main)...)
	}
	heap := func(rmid, info uint8, xid uint32, main []byte) Record {
		return w.put(w.record(rmid, info, xid, block0(main)), false)
	}
	del := func(flags byte) []byte { return []byte{0, 0, 0, 0, 1, 0, 0, flags} }
	for _, tc := range []struct {
		name string
		r    Record
		op   RowOp
		rows int
	}{
		{"insert", heap(RmHeapID, heapInsert, 800, []byte{1, 0, 0}), RowInsert, 1},
		{"insert on a new page", heap(RmHeapID, heapInsert|0x80, 800, []byte{1, 0, 0}), RowInsert, 1},
		{"hot update", heap(RmHeapID, heapHotUpdate, 801, make([]byte, 14)), RowUpdate, 1},
		{"delete", heap(RmHeapID, heapDelete, 802, del(0)), RowDelete, 1},
		// PostgreSQL 15's heapam_xlog.h: XLH_DELETE_IS_SUPER (1<<3),
		// XLH_DELETE_IS_PARTITION_MOVE (1<<4).
		{"super-delete", heap(RmHeapID, heapDelete, 803, del(1<<3)), RowUnInsert, 1},
		{"delete of a row moving partitions", heap(RmHeapID, heapDelete, 803, del(1<<4|1<<1)), RowDelete, 1},
		{"multi-insert of 25", heap(RmHeap2ID, heap2MultiInsert, 804, []byte{0, 0, 25, 0}), RowInsert, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok, err := tc.r.RowChange()
			if err != nil || !ok {
				t.Fatalf("RowChange = %+v, %v, %v", c, ok, err)
			}
			if c.Op != tc.op || c.Rows != tc.rows || c.XID != tc.r.XID || c.Block.RelNode != 16384 || c.Block.DBNode != 5 || c.Block.SpcNode != 1663 || c.Block.Block != 7 {
				t.Errorf("got %+v", c)
			}
		})
	}
	// A heap lock is no row change; a truncated delete is an error.
	lock := heap(RmHeapID, 0x60, 805, make([]byte, 8))
	if _, ok, err := lock.RowChange(); ok || err != nil {
		t.Errorf("heap lock: %v %v", ok, err)
	}
	short := heap(RmHeapID, heapDelete, 806, []byte{1})
	if _, _, err := short.RowChange(); err == nil {
		t.Error("a delete with 1 byte of main data decoded")
	}
}
