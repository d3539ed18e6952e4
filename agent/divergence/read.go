package divergence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/wal"
)

// Statuses of a report.
const (
	// StatusKnown: the WAL was read from the fork point to its end.
	StatusKnown = "known"
	// StatusUnknown: it could not be (Error says why); the transactions
	// are not known, which is not the same as none.
	StatusUnknown = "unknown"
	// StatusReplica: the node was a replica (in recovery) whose WAL goes
	// past the fork: it received what the old primary wrote there, read
	// as for StatusKnown, but it committed none of it (not its lost
	// commits; the old primary's report has them).
	StatusReplica = "replica"
	// StatusReplicaUnknown: a replica whose control data says it
	// received WAL past the fork, which could not be read (Error).
	StatusReplicaUnknown = "replica-unknown"
)

// MaxListed bounds the transactions a report lists; beyond it they are
// counted (Committed) but not listed (Omitted).
const MaxListed = 1_000_000

// Report is a divergence report: what a former primary's WAL held past the
// fork point.
type Report struct {
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	// Epoch is the rejoin order's; NewPrimary the node it rejoins.
	Epoch      uint64 `json:"epoch"`
	NewPrimary string `json:"new_primary"`
	Status     string `json:"status"`
	// Replica: the node was in recovery (a replica), not a primary.
	Replica bool   `json:"replica,omitempty"`
	Error   string `json:"error,omitempty"`
	// Timeline is this node's; NewTimeline the new primary's.
	Timeline    uint32 `json:"timeline"`
	NewTimeline uint32 `json:"new_timeline,omitempty"`
	// Fork is where the new timeline branched off Timeline; End the end
	// of this node's valid WAL (EndReason why it ends there); Bytes is
	// End - Fork.
	Fork      string `json:"fork_lsn,omitempty"`
	End       string `json:"end_lsn,omitempty"`
	EndReason string `json:"end_reason,omitempty"`
	Bytes     uint64 `json:"bytes"`
	// Committed counts the transactions that committed past the fork
	// (listed in Transactions, but for the last Omitted of them); Aborted
	// those that aborted; InProgress those with changes past the fork and
	// no end before End (never acknowledged as committed).
	Committed    int           `json:"committed"`
	Aborted      int           `json:"aborted"`
	InProgress   int           `json:"in_progress"`
	Omitted      int           `json:"omitted,omitempty"`
	Transactions []Transaction `json:"transactions"`
	// Segments are the WAL segments holding the range, stored raw with
	// the report (Store); StoreError says why they or the report were not.
	Segments   []string `json:"segments,omitempty"`
	Stored     bool     `json:"stored"`
	StoreError string   `json:"store_error,omitempty"`
	// NameError says why relation names could not be resolved.
	NameError string `json:"name_error,omitempty"`
}

// Transaction is one transaction that committed past the fork point.
type Transaction struct {
	XID uint32 `json:"xid"`
	// LSN is where its commit record begins.
	LSN        string    `json:"commit_lsn"`
	CommitTime time.Time `json:"commit_time"`
	Prepared   bool      `json:"prepared,omitempty"`
	// Relations it changed, with the rows counted from the fork point on
	// (a transaction that began before it changed rows before it too).
	Relations []Relation `json:"relations"`
}

// Relation is what a transaction did to one relation.
type Relation struct {
	Tablespace  uint32 `json:"tablespace"`
	Database    uint32 `json:"database"`
	RelFileNode uint32 `json:"relfilenode"`
	// OID and Name (schema.relation, in database DatabaseName) as the new
	// primary's catalogs know the relfilenode (zero and empty when they do
	// not: a relation created past the fork, or names not resolved).
	OID          uint32 `json:"oid,omitempty"`
	Name         string `json:"name,omitempty"`
	DatabaseName string `json:"database_name,omitempty"`
	Inserts      uint64 `json:"inserts"`
	Updates      uint64 `json:"updates"`
	Deletes      uint64 `json:"deletes"`
}

// RelKey identifies a relation's storage.
type RelKey struct{ Tablespace, Database, RelFileNode uint32 }

// Key is the relation's RelKey.
func (r Relation) Key() RelKey { return RelKey{r.Tablespace, r.Database, r.RelFileNode} }

// rows is a (sub)transaction's row changes per relation.
type rows map[RelKey]*Relation

func (r rows) add(c wal.RowChange) {
	k := RelKey{c.Block.SpcNode, c.Block.DBNode, c.Block.RelNode}
	rel := r[k]
	if rel == nil {
		rel = &Relation{Tablespace: k.Tablespace, Database: k.Database, RelFileNode: k.RelFileNode}
		r[k] = rel
	}
	n := uint64(c.Rows)
	switch c.Op {
	case wal.RowInsert:
		rel.Inserts += n
	case wal.RowUpdate:
		rel.Updates += n
	case wal.RowDelete:
		rel.Deletes += n
	case wal.RowUnInsert:
		rel.Inserts -= min(rel.Inserts, n)
	}
}

// Range is the result of reading a node's WAL past the fork point.
type Range struct {
	Fork, End    wal.LSN
	EndReason    string
	Committed    int
	Aborted      int
	InProgress   int
	Omitted      int
	Transactions []Transaction
	// Segments are the files of pg_wal that hold the range, in order.
	Segments []string
}

// ErrNotReadable is wrapped by Read's error when the WAL at the fork point
// cannot be read (missing segment, WAL ending before the fork).
var ErrNotReadable = errors.New("the WAL at the fork point cannot be read")

// Read reads the WAL in pgwal (a pg_wal directory) of timeline tli, in
// segments of segSize bytes, from fork to the end of its valid WAL, and
// collects the transactions that ended past fork.
func Read(ctx context.Context, pgwal string, tli uint32, segSize uint64, fork wal.LSN) (Range, error) {
	src := func(ctx context.Context, segNo uint64) (io.ReadCloser, error) {
		f, err := os.Open(filepath.Join(pgwal, wal.SegmentName(tli, segNo, segSize)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", wal.SegmentName(tli, segNo, segSize), wal.ErrNoSegment)
		}
		return f, err
	}
	rr, err := wal.NewRecordReader(src, segSize, fork)
	if err != nil {
		return Range{}, err
	}
	defer rr.Close()
	out := Range{Fork: fork}
	pending := map[uint32]rows{} // (sub)transaction → its row changes past the fork
	for {
		rec, err := rr.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Range{}, fmt.Errorf("reading the WAL of timeline %d past %s: %w", tli, fork, err)
		}
		if c, ok, err := rec.RowChange(); err != nil {
			return Range{}, err
		} else if ok && c.XID != 0 {
			r := pending[c.XID]
			if r == nil {
				r = rows{}
				pending[c.XID] = r
			}
			r.add(c)
			continue
		}
		e, ok, err := rec.XactEnd()
		if err != nil {
			return Range{}, err
		}
		if !ok {
			continue
		}
		if !e.Commit {
			out.Aborted++
			delete(pending, e.XID)
			for _, s := range e.SubXIDs {
				delete(pending, s)
			}
			continue
		}
		all := pending[e.XID]
		delete(pending, e.XID)
		if all == nil {
			all = rows{}
		}
		for _, s := range e.SubXIDs {
			for k, rel := range pending[s] {
				if have := all[k]; have != nil {
					have.Inserts += rel.Inserts
					have.Updates += rel.Updates
					have.Deletes += rel.Deletes
				} else {
					all[k] = rel
				}
			}
			delete(pending, s)
		}
		out.Committed++
		if len(out.Transactions) >= MaxListed {
			out.Omitted++
			continue
		}
		tx := Transaction{XID: e.XID, LSN: rec.LSN.String(), CommitTime: e.Time, Prepared: e.Prepared, Relations: []Relation{}}
		for _, rel := range all {
			tx.Relations = append(tx.Relations, *rel)
		}
		slices.SortFunc(tx.Relations, func(a, b Relation) int {
			return cmp.Or(cmp.Compare(a.Database, b.Database), cmp.Compare(a.RelFileNode, b.RelFileNode), cmp.Compare(a.Tablespace, b.Tablespace))
		})
		out.Transactions = append(out.Transactions, tx)
	}
	end, why := rr.End()
	switch {
	case end < fork:
		return Range{}, fmt.Errorf("%w: valid WAL of timeline %d ends at %s, before the fork point %s (%s)", ErrNotReadable, tli, end, fork, why)
	case end == fork && strings.Contains(why, wal.ErrNoSegment.Error()):
		// The fork is at a segment boundary and the segment after it is
		// missing: a node that wrote nothing past the fork and never
		// created the next segment is rare (its shutdown checkpoint alone
		// goes past the fork), a segment removed is not told apart.
		return Range{}, fmt.Errorf("%w: the WAL segment that begins at the fork point %s is missing (%s)", ErrNotReadable, fork, why)
	}
	out.End, out.EndReason = end, why
	// Subtransactions of a transaction still open have entries of their
	// own: count the transactions with changes, an upper bound.
	out.InProgress = len(pending)
	for s := uint64(fork) / segSize; end > fork && s*segSize < uint64(end); s++ { // none when nothing is past the fork
		out.Segments = append(out.Segments, wal.SegmentName(tli, s, segSize))
	}
	return out, nil
}
