package objstream

import (
	"io"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// At the default level (3 to 5), the writer picks the zstd encoder of an
// object from its first adaptiveProbe bytes, compressed with both: the
// fastest encoder unless the default one's output of the sample is more
// than adaptiveSlack percent smaller. klauspost's default encoder spends
// its time searching for matches the fastest one finds as well, or that
// are not there: on PostgreSQL pages of random hex text it used twice the
// fastest encoder's CPU for a larger output (0.488 of the input against
// 0.474), and it was two thirds of a full backup's CPU on a database half
// pgbench, half such text; on pgbench's accounts table it used about
// three times the CPU for the same output (0.027). Where it does compress
// better (btree indexes: 0.155 against 0.159, 0.165 against 0.236 on
// pgbench's tables), it is kept, and the object is the same single frame
// as before. The samples cost well under a millisecond per object. A
// base-backup object is one relation file (or a part of one), whose pages
// are all alike, so the start of the object stands for the rest. Objects
// smaller than the sample go to the default encoder untested.
//
// The choice changes only the encoder's settings within the zstd format:
// every reader decodes either.
const (
	adaptiveProbe = 64 << 10
	// adaptiveSlack: how much larger (percent) the fastest encoder's
	// output of the sample may be than the default one's.
	adaptiveSlack = 5
	// adaptiveRawRatio: a sample compressed to at least this share is
	// hardly compressed.
	adaptiveRawRatio = 90
	// adaptivePipeRatio: an object whose sample the fastest encoder
	// compresses to less than this share (percent) is encoded without
	// concurrency even when the writer has some. Pipelining overlaps a
	// block's match search with the previous block's entropy coding and
	// encryption, which are most of the work on data that compresses
	// about 2:1 (a WAL segment of hex text: 130 against 80 ms on two CPUs)
	// and little of it on data that compresses 10:1 or more (pgbench's
	// WAL: 21 against 22 ms, the hand-offs between goroutines costing
	// more than they save).
	adaptivePipeRatio = 20
)

// adaptiveEncoder is the zstd layer at the default level (see above).
type adaptiveEncoder struct {
	w    io.Writer
	pool *Pool
	size int64 // the zstd content size, or -1

	conc int           // the writer's concurrency
	pipe bool          // the sample says conc is worth it (adaptivePipeRatio)
	buf  []byte        // the sample, until the encoder is chosen
	enc  *zstd.Encoder // once chosen
	key  encKey
	err  error
}

// The encoders an adaptiveEncoder chooses from, as they compress the
// sample (EncodeAll runs in the caller's goroutine whatever the encoder's
// concurrency); the object's encoder has the writer's concurrency.
var (
	adaptiveDefKey  = encKey{level: zstd.SpeedDefault, conc: 1}
	adaptiveFastKey = encKey{level: zstd.SpeedFastest, conc: 1}
)

func newAdaptiveEncoder(w io.Writer, p *Pool, size int64, conc int) *adaptiveEncoder {
	return &adaptiveEncoder{w: w, pool: p, size: size, conc: conc}
}

func (a *adaptiveEncoder) Write(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	if a.enc != nil {
		n, err := a.enc.Write(p)
		if err != nil {
			a.err = err
		}
		return n, err
	}
	take := min(len(p), adaptiveProbe-len(a.buf))
	if a.buf == nil {
		a.buf = make([]byte, 0, adaptiveProbe)
	}
	a.buf = append(a.buf, p[:take]...)
	if len(a.buf) < adaptiveProbe {
		return len(p), nil
	}
	if err := a.start(a.choose()); err != nil {
		return take, err
	}
	n, err := a.Write(p[take:])
	return take + n, err
}

// choose compresses the sample with both encoders and says which one the
// object gets: the fastest unless the default one's output is more than
// adaptiveSlack percent smaller. The fastest encoder stores data without
// any match whole, where the default one still entropy-codes it in a
// stream (hex digits alone: 0.63 of the input), and the default encoder
// too stores a small sample of such data whole: for a sample the fastest
// encoder hardly shrinks, the entropy coder alone (huff0, what zstd codes
// literals with) says whether the default encoder would do better, or
// whether the data is compressed or encrypted already and the fastest
// encoder wastes the least time on it.
func (a *adaptiveEncoder) choose() encKey {
	size := func(k encKey) int {
		enc, err := a.pool.newEncoder(k)
		if err != nil {
			return 0
		}
		out := enc.EncodeAll(a.buf, make([]byte, 0, len(a.buf)))
		a.pool.putEncoder(k, enc)
		return len(out)
	}
	fast := size(adaptiveFastKey)
	a.pipe = fast*100 >= len(a.buf)*adaptivePipeRatio
	if fast*100 >= len(a.buf)*adaptiveRawRatio {
		var s huff0.Scratch
		lits, _, err := huff0.Compress1X(a.buf, &s)
		if err == nil && len(lits)*100 < len(a.buf)*adaptiveRawRatio {
			return adaptiveDefKey
		}
		return adaptiveFastKey
	}
	if fast*100 > size(adaptiveDefKey)*(100+adaptiveSlack) {
		return adaptiveDefKey
	}
	return adaptiveFastKey
}

// start sets up the encoder k, with the writer's concurrency where the
// sample is not highly compressible, and writes the sample through it.
func (a *adaptiveEncoder) start(k encKey) error {
	if a.pipe {
		k.conc = a.conc
	}
	enc, err := a.pool.newEncoder(k)
	if err != nil {
		a.err = err
		return err
	}
	a.enc, a.key = enc, k
	if a.size >= 0 {
		enc.ResetContentSize(a.w, a.size)
	} else {
		enc.Reset(a.w)
	}
	buf := a.buf
	a.buf = nil
	if _, err := enc.Write(buf); err != nil {
		a.err = err
		return err
	}
	return nil
}

// Close finishes the frame and returns the encoder to the pool. It does
// not close the underlying writer.
func (a *adaptiveEncoder) Close() error {
	if a.err == nil && a.enc == nil {
		a.start(adaptiveDefKey) // a small object: untested
	}
	if a.err != nil {
		a.release()
		return a.err
	}
	if err := a.enc.Close(); err != nil {
		a.err = err
		a.enc = nil
		return err
	}
	a.pool.putEncoder(a.key, a.enc)
	a.enc = nil
	return nil
}

// release drops the encoder after a failure, writing nothing more.
func (a *adaptiveEncoder) release() {
	if a.enc != nil {
		a.enc.Reset(io.Discard)
		_ = a.enc.Close()
		a.enc = nil
	}
	a.buf = nil
}
