package wal

import (
	"encoding/binary"
	"fmt"
	"time"
)

// This file decodes the records that tell which transactions ended and
// which rows they changed (PostgreSQL 15's access/xact.h, access/heapam_xlog.h):
//
// A transaction's end is an RM_XACT_ID record: COMMIT, ABORT, COMMIT
// PREPARED or ABORT PREPARED (xl_info & XLOG_XACT_OPMASK). Its main data
// is xl_xact_commit / xl_xact_abort { TimestampTz xact_time }, then, when
// xl_info has XLOG_XACT_HAS_INFO, xl_xact_xinfo { uint32 xinfo } whose
// bits say which of these follow, in this order: xl_xact_dbinfo (8
// bytes), xl_xact_subxacts { int n; TransactionId[n] }, xl_xact_relfilenodes
// { int n; RelFileNode[n] (12 bytes each) }, xl_xact_stats_items { int n;
// 12 bytes each }, (commits only) xl_xact_invals { int n; 16 bytes each },
// xl_xact_twophase { TransactionId xid } (then the GID when HAS_GID) and
// the origin.
//
// Row changes are RM_HEAP_ID records (INSERT, DELETE, UPDATE, HOT_UPDATE)
// and RM_HEAP2_ID MULTI_INSERT (COPY, multi-row inserts): block 0 is the
// heap page they changed (UPDATE: the new tuple's), so its RelFileNode is
// the relation; xl_xid is the (sub)transaction that made them.

// Resource managers.
const (
	RmXactID  = 1  // RM_XACT_ID
	RmHeap2ID = 9  // RM_HEAP2_ID
	RmHeapID  = 10 // RM_HEAP_ID
)

// XACT record kinds (xl_info & XLOG_XACT_OPMASK) and flags.
const (
	xactOpMask          = 0x70
	xactCommit          = 0x00
	xactPrepare         = 0x10
	xactAbort           = 0x20
	xactCommitPrepared  = 0x30
	xactAbortPrepared   = 0x40
	xactHasInfo         = 0x80
	xinfoHasDBInfo      = 1 << 0
	xinfoHasSubxacts    = 1 << 1
	xinfoHasRelFiles    = 1 << 2
	xinfoHasInvals      = 1 << 3
	xinfoHasTwoPhase    = 1 << 4
	xinfoHasDroppedStat = 1 << 8
)

// Heap record kinds (xl_info & XLOG_HEAP_OPMASK).
const (
	heapOpMask       = 0x70
	heapInsert       = 0x00
	heapDelete       = 0x10
	heapUpdate       = 0x20
	heapHotUpdate    = 0x40
	heap2MultiInsert = 0x50
	// xlhDeleteIsSuper is XLH_DELETE_IS_SUPER: the undo of a speculative
	// insertion (INSERT … ON CONFLICT that found a conflict); 1<<4 is
	// XLH_DELETE_IS_PARTITION_MOVE (a row moving partitions: a delete).
	xlhDeleteIsSuper = 1 << 3
)

// XactEnd is the end of a transaction, as an XACT record says.
type XactEnd struct {
	// Commit: committed (COMMIT, COMMIT PREPARED); otherwise aborted.
	Commit bool
	// Prepared: COMMIT/ABORT PREPARED of a two-phase transaction.
	Prepared bool
	// XID is the transaction: the record's xl_xid, or for a prepared
	// transaction the one it finishes.
	XID uint32
	// SubXIDs are its subtransactions that end with it.
	SubXIDs []uint32
	// Time is xact_time: when it committed or aborted.
	Time time.Time
}

// XactEnd decodes a COMMIT, ABORT, COMMIT PREPARED or ABORT PREPARED
// record; ok is false for any other record (a PREPARE ends nothing yet).
func (r *Record) XactEnd() (XactEnd, bool, error) {
	if r.RmID != RmXactID {
		return XactEnd{}, false, nil
	}
	info := r.Info &^ xlrInfoMask
	var e XactEnd
	switch info & xactOpMask {
	case xactCommit:
		e.Commit = true
	case xactAbort:
	case xactCommitPrepared:
		e.Commit, e.Prepared = true, true
	case xactAbortPrepared:
		e.Prepared = true
	default:
		return XactEnd{}, false, nil
	}
	d, err := r.MainData()
	if err != nil {
		return XactEnd{}, false, err
	}
	bad := func(what string) error {
		return fmt.Errorf("transaction end record at %s: main data too short for %s (%d bytes)", r.LSN, what, len(d))
	}
	le := binary.LittleEndian
	if len(d) < 8 {
		return XactEnd{}, false, bad("xact_time")
	}
	e.Time, e.XID = pgTime(int64(le.Uint64(d))), r.XID
	p := d[8:]
	var xinfo uint32
	if info&xactHasInfo != 0 {
		if len(p) < 4 {
			return XactEnd{}, false, bad("xinfo")
		}
		xinfo, p = le.Uint32(p), p[4:]
	}
	skip := func(n int, what string) error {
		if n < 0 || len(p) < n {
			return bad(what)
		}
		p = p[n:]
		return nil
	}
	// counted reads an int count and returns it, checking that n items of
	// size bytes follow.
	counted := func(size int, what string) (int, error) {
		if len(p) < 4 {
			return 0, bad(what)
		}
		n := int(int32(le.Uint32(p)))
		if n < 0 || n > (len(p)-4)/size {
			return 0, bad(what)
		}
		p = p[4:]
		return n, nil
	}
	if xinfo&xinfoHasDBInfo != 0 {
		if err := skip(8, "dbinfo"); err != nil {
			return XactEnd{}, false, err
		}
	}
	if xinfo&xinfoHasSubxacts != 0 {
		n, err := counted(4, "subxacts")
		if err != nil {
			return XactEnd{}, false, err
		}
		e.SubXIDs = make([]uint32, n)
		for i := range n {
			e.SubXIDs[i] = le.Uint32(p[4*i:])
		}
		p = p[4*n:]
	}
	for _, f := range []struct {
		bit  uint32
		size int
		what string
	}{{xinfoHasRelFiles, 12, "relfilenodes"}, {xinfoHasDroppedStat, 12, "dropped stats"}} {
		if xinfo&f.bit == 0 {
			continue
		}
		n, err := counted(f.size, f.what)
		if err != nil {
			return XactEnd{}, false, err
		}
		p = p[f.size*n:]
	}
	if e.Commit && xinfo&xinfoHasInvals != 0 { // commits only
		n, err := counted(16, "invalidations")
		if err != nil {
			return XactEnd{}, false, err
		}
		p = p[16*n:]
	}
	if xinfo&xinfoHasTwoPhase != 0 {
		if len(p) < 4 {
			return XactEnd{}, false, bad("twophase xid")
		}
		e.XID = le.Uint32(p)
	}
	return e, true, nil
}

// IsPrepare reports whether the record is a PREPARE TRANSACTION: its
// transaction ends later, with a COMMIT PREPARED or ABORT PREPARED.
func (r *Record) IsPrepare() bool {
	return r.RmID == RmXactID && r.Info&^xlrInfoMask&xactOpMask == xactPrepare
}

// RowOp is a kind of row change.
type RowOp int

// The row changes a heap record can make.
const (
	RowInsert RowOp = iota + 1
	RowUpdate
	RowDelete
	// RowUnInsert is the undo of a speculative insertion: one insert less.
	RowUnInsert
)

// RowChange is what a heap record did: Op on Rows rows of the relation in
// Block (block 0 of the record), by transaction XID.
type RowChange struct {
	Op    RowOp
	Rows  int
	XID   uint32
	Block BlockRef
}

// RowChange decodes the row change of a heap record (INSERT, DELETE,
// UPDATE, HOT_UPDATE, MULTI_INSERT); ok is false for other records.
func (r *Record) RowChange() (RowChange, bool, error) {
	info := r.Info &^ xlrInfoMask & heapOpMask
	c := RowChange{Rows: 1, XID: r.XID}
	switch {
	case r.RmID == RmHeapID && info == heapInsert:
		c.Op = RowInsert
	case r.RmID == RmHeapID && (info == heapUpdate || info == heapHotUpdate):
		c.Op = RowUpdate
	case r.RmID == RmHeapID && info == heapDelete:
		c.Op = RowDelete
	case r.RmID == RmHeap2ID && info == heap2MultiInsert:
		c.Op = RowInsert
	default:
		return RowChange{}, false, nil
	}
	blocks, main, err := r.decode(true)
	if err != nil {
		return RowChange{}, false, err
	}
	if len(blocks) == 0 || blocks[0].ID != 0 {
		return RowChange{}, false, fmt.Errorf("heap record at %s has no block 0", r.LSN)
	}
	c.Block = blocks[0]
	switch {
	case r.RmID == RmHeap2ID:
		// xl_heap_multi_insert { uint8 flags; uint16 ntuples; ... }
		if len(main) < 4 {
			return RowChange{}, false, fmt.Errorf("multi-insert record at %s: %d bytes of main data", r.LSN, len(main))
		}
		c.Rows = int(binary.LittleEndian.Uint16(main[2:]))
	case c.Op == RowDelete:
		// xl_heap_delete { TransactionId xmax; OffsetNumber offnum; uint8 infobits_set; uint8 flags }
		if len(main) < 8 {
			return RowChange{}, false, fmt.Errorf("delete record at %s: %d bytes of main data", r.LSN, len(main))
		}
		if main[7]&xlhDeleteIsSuper != 0 {
			c.Op = RowUnInsert
		}
	}
	return c, true, nil
}
