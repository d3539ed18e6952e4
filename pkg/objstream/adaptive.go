package objstream

import (
	"io"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// At the default level (3 to 5), the writer picks the zstd encoder of an
// object from its first adaptiveProbe bytes: when the fastest encoder
// shrinks that sample by less than about two thirds (random text, data
// compressed already), the object is compressed with the fastest encoder,
// else with the default one as before. On such data klauspost's default
// encoder spends its time searching for matches that are not there: on
// PostgreSQL pages of random hex text it used twice the fastest
// encoder's CPU for a larger output (0.488 of the input against 0.474),
// and it was two thirds of a full backup's CPU on a database half
// pgbench, half such text. On compressible data (pgbench's tables and
// indexes, 0.03 to 0.17 of the input) the default encoder keeps its
// better ratio, and the object is the same single frame as before; the
// sample costs well under a millisecond per object. A base-backup object is one
// relation file (or a part of one), whose pages are all alike, so the
// start of the object stands for the rest. Objects smaller than the
// sample go to the default encoder untested.
//
// The choice changes only the encoder's settings within the zstd format:
// every reader decodes either.
const (
	adaptiveProbe = 64 << 10
	// adaptiveFastRatio: a sample compressed by the fastest encoder to
	// more than this share of its size (percent) sends the object to it.
	adaptiveFastRatio = 35
	// adaptiveRawRatio: a sample compressed to at least this share is
	// hardly compressed.
	adaptiveRawRatio = 90
)

// adaptiveEncoder is the zstd layer at the default level (see above).
type adaptiveEncoder struct {
	w    io.Writer
	pool *Pool
	size int64 // the zstd content size, or -1

	buf []byte        // the sample, until the encoder is chosen
	enc *zstd.Encoder // once chosen
	key encKey
	err error
}

// The encoders an adaptiveEncoder chooses from.
var (
	adaptiveDefKey  = encKey{level: zstd.SpeedDefault, conc: 1}
	adaptiveFastKey = encKey{level: zstd.SpeedFastest, conc: 1}
)

func newAdaptiveEncoder(w io.Writer, p *Pool, size int64) *adaptiveEncoder {
	return &adaptiveEncoder{w: w, pool: p, size: size}
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

// choose compresses the sample with the fastest encoder and says which
// encoder the object gets. The fastest encoder stores data without any
// match whole, where the default one still entropy-codes it in a stream
// (hex digits alone: 0.63 of the input): for a sample the fastest encoder
// hardly shrinks, the entropy coder alone (huff0, what zstd codes
// literals with) says whether the default encoder would do better, or
// whether the data is compressed or encrypted already and the fastest
// encoder wastes the least time on it.
func (a *adaptiveEncoder) choose() encKey {
	enc, err := a.pool.newEncoder(adaptiveFastKey)
	if err != nil {
		return adaptiveDefKey
	}
	out := enc.EncodeAll(a.buf, make([]byte, 0, len(a.buf)))
	a.pool.putEncoder(adaptiveFastKey, enc)
	switch fast := len(out) * 100 / len(a.buf); {
	case fast <= adaptiveFastRatio:
		return adaptiveDefKey
	case fast < adaptiveRawRatio:
		return adaptiveFastKey
	}
	var s huff0.Scratch
	lits, _, err := huff0.Compress1X(a.buf, &s)
	if err == nil && len(lits)*100 < len(a.buf)*adaptiveRawRatio {
		return adaptiveDefKey
	}
	return adaptiveFastKey
}

// start sets up the encoder k and writes the sample through it.
func (a *adaptiveEncoder) start(k encKey) error {
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
