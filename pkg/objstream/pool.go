package objstream

import (
	"io"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Pool reuses zstd encoders and decoders between objects. Setting one up
// costs about half a millisecond and a few MiB of zeroed memory (about
// 4 MiB for a default-level encoder that has seen a large object, ~19 MiB
// at the better levels' 8 MiB window), which
// dominates the cost of small objects and adds GC pressure for large ones.
// A long-running process that writes or reads many objects should create
// one Pool and use its NewWriter and NewReader; the package-level
// functions build fresh encoders and decoders every time.
//
// The zero value is ready to use. A Pool is safe for concurrent use and
// must not be copied after first use. Idle encoders and decoders are
// dropped by the garbage collector (they are kept in sync.Pools).
type Pool struct {
	// Concurrency is the zstd encoder concurrency of the writers made by
	// NewWriter whose Options.Concurrency is 0 (0 here: 1). A process that
	// usually writes one object at a time and waits for it (wal-push)
	// sets 2 on a multi-core host: the encoder then finds the matches of
	// one block in the caller's goroutine while another goroutine
	// entropy-codes, encrypts and writes the block before it.
	Concurrency int

	mu   sync.Mutex
	encs map[encKey]*sync.Pool
	decs sync.Pool
}

// encKey identifies interchangeable encoders.
type encKey struct {
	level zstd.EncoderLevel
	conc  int
}

// NewWriter is like the package-level NewWriter, but takes its zstd
// encoder from p and returns it to p when Close succeeds.
func (p *Pool) NewWriter(w io.Writer, opts Options) (Writer, error) {
	if opts.Concurrency == 0 {
		opts.Concurrency = p.Concurrency
	}
	return newWriter(w, opts, p)
}

// NewReader is like the package-level NewReader, but takes its zstd
// decoder from p and returns it to p at the end of the object or on Close.
func (p *Pool) NewReader(r io.Reader, identities []age.Identity) (*Reader, error) {
	return newReader(r, ReadOptions{Identities: identities}, p)
}

// NewReaderOpts is like the package-level NewReaderOpts, with p's decoders.
func (p *Pool) NewReaderOpts(r io.Reader, opts ReadOptions) (*Reader, error) {
	return newReader(r, opts, p)
}

func (p *Pool) encPool(k encKey) *sync.Pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.encs == nil {
		p.encs = make(map[encKey]*sync.Pool)
	}
	sp := p.encs[k]
	if sp == nil {
		sp = new(sync.Pool)
		p.encs[k] = sp
	}
	return sp
}

// newEncoder returns an encoder with options k, from p if p is not nil.
// The caller must Reset it to its writer.
func (p *Pool) newEncoder(k encKey) (*zstd.Encoder, error) {
	if p != nil {
		if e, ok := p.encPool(k).Get().(*zstd.Encoder); ok {
			return e, nil
		}
	}
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(k.level),
		zstd.WithEncoderConcurrency(k.conc),
		zstd.WithWindowSize(encoderWindow(k.level)),
		// No xxhash64 content checksum in the frame: the trailer's
		// SHA-256 covers the same decoded bytes and is always
		// verified, so the frame checksum only cost time (about 4% of
		// a backup's CPU, 8% of a restore's decoding).
		zstd.WithEncoderCRC(false),
	)
}

// encoderWindow is the zstd window the writer uses at level l. For the fast
// and default levels it is 512 KiB (libzstd's own levels 1-3 use 512 KiB to
// 2 MiB): PostgreSQL pages and WAL find their matches close by (the
// compression ratio of a pgbench database and its WAL is the same within
// 0.3% as with 8 MiB), while the encoder's and decoder's history buffers
// (twice the window) stay in the CPU caches, which made compressing about
// 10% and decompressing about 25% cheaper, and a Writer and a Reader use
// 15 MiB less memory each. The better levels keep the library's 8 MiB.
func encoderWindow(l zstd.EncoderLevel) int {
	if l <= zstd.SpeedDefault {
		return 512 << 10
	}
	return 8 << 20
}

// putEncoder returns an encoder that finished its stream without error.
func (p *Pool) putEncoder(k encKey, e *zstd.Encoder) {
	if p == nil {
		return
	}
	e.Reset(nil) // drop the reference to the caller's writer
	p.encPool(k).Put(e)
}

// newDecoder returns a decoder reading from r, from p if p is not nil.
func (p *Pool) newDecoder(r io.Reader) (*zstd.Decoder, error) {
	if p != nil {
		if d, ok := p.decs.Get().(*zstd.Decoder); ok {
			if err := d.Reset(r); err == nil {
				return d, nil
			}
			d.Close()
		}
	}
	return zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(false),
		zstd.WithDecoderMaxWindow(maxZstdWindow),
	)
}

// putDecoder returns a decoder that is not in an error state, or closes it
// when there is no pool.
func (p *Pool) putDecoder(d *zstd.Decoder) {
	if p == nil {
		d.Close()
		return
	}
	if err := d.Reset(nil); err != nil { // drop the reference to the source
		d.Close()
		return
	}
	p.decs.Put(d)
}
