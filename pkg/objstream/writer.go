package objstream

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// DefaultLevel is the zstd level used when Options.Level is 0.
const DefaultLevel = 3

// Options configure NewWriter.
type Options struct {
	// Compression is CompressionZstd (the default, when empty) or
	// CompressionNone.
	Compression string
	// Level is the zstd level, 1..22, mapped with
	// zstd.EncoderLevelFromZstd: 1-2 fastest, 3-5 default, 6-9 better,
	// 10-22 best (much slower). 0 means DefaultLevel.
	Level int
	// Recipients are the age recipients the object is encrypted to. At
	// least one is required unless Unencrypted is set.
	Recipients []age.Recipient
	// Unencrypted must be set, with no Recipients, to write an
	// unencrypted object. There is no implicit fallback.
	Unencrypted bool
	// PlainSize is the plaintext length if known in advance, recorded in
	// the header and checked by Close; -1 if unknown. Note that the zero
	// value 0 means "known to be empty".
	PlainSize int64
	// PlainSHA256 is the plaintext's SHA-256 if known in advance, recorded
	// in the header and checked by Close; nil if unknown.
	PlainSHA256 []byte
	// TrustSHA256 says PlainSHA256 was computed by the caller over exactly
	// the bytes it will write (a WAL segment hashed in memory), so the
	// writer puts it in the trailer without hashing the plaintext again.
	// A caller that breaks the promise writes an object that fails every
	// read: detected, never silent.
	TrustSHA256 bool
	// Checksum is the hash of the plaintext recorded in the trailer:
	// ChecksumSHA256 (the default, when empty; a version 1 object) or
	// ChecksumBLAKE3 (a version 2 object, which pgdr before version 2 of
	// the format cannot read). PlainSHA256 needs ChecksumSHA256.
	Checksum Checksum
	// Concurrency is the zstd encoder concurrency; 0 means 1 (or the
	// Pool's Concurrency). With 1 the encoder runs synchronously in the
	// caller's goroutine, which is what callers running many streams in
	// parallel want; with 2 or more it pipelines each block's match
	// search and its entropy coding (and the layers below: encryption,
	// the destination writer) in two goroutines. At the default level the
	// encoder is still chosen from a sample (adaptive.go).
	Concurrency int
	// Created is recorded in the header; zero means time.Now().
	Created time.Time
	// Signer, when set, signs the object's Name, PlainSize and
	// PlainSHA256 (all three required) into its header, for readers
	// with a Verifier (see ReadOptions).
	Signer *Signer
	// Name is the object's key in the repository; needed with Signer.
	Name string
}

// writer implements the io.WriteCloser returned by NewWriter.
type writer struct {
	top    io.Writer        // where plaintext goes: zenc, aenc or dst
	zenc   *zstd.Encoder    // nil without compression or with azenc
	azenc  *adaptiveEncoder // the zstd layer at the default level (adaptive.go)
	pool   *Pool            // where zenc goes back to, or nil
	key    encKey
	aenc   io.WriteCloser // nil without encryption
	hash   hash.Hash
	alg    Checksum
	ver    int // format version
	n      int64
	size   int64  // expected plaintext size or -1
	sum    []byte // expected plaintext SHA-256 or nil
	final  []byte // the plaintext checksum, after Close
	err    error  // sticky error
	closed bool
}

// NewWriter writes the header of a new object to w and returns a writer for
// its plaintext. Close writes the trailer and flushes the compression and
// encryption layers; it does not close w. If any call returns an error the
// partial object must be discarded.
//
// NewWriter builds a fresh zstd encoder; see Pool for reusing them.
func NewWriter(w io.Writer, opts Options) (Writer, error) {
	return newWriter(w, opts, nil)
}

func newWriter(w io.Writer, opts Options, pool *Pool) (Writer, error) {
	if w == nil {
		return nil, errors.New("objstream: nil writer")
	}
	hdr := Header{
		Version:     1,
		Checksum:    opts.Checksum,
		Compression: opts.Compression,
		PlainSize:   opts.PlainSize,
		PlainSHA256: opts.PlainSHA256,
		Created:     opts.Created,
	}
	switch hdr.Checksum {
	case "", ChecksumSHA256:
		hdr.Checksum = ChecksumSHA256
	case ChecksumBLAKE3:
		hdr.Version = 2
	default:
		return nil, fmt.Errorf("objstream: unknown checksum %q (want %q or %q)", opts.Checksum, ChecksumSHA256, ChecksumBLAKE3)
	}
	if hdr.PlainSHA256 != nil && hdr.Checksum != ChecksumSHA256 {
		return nil, fmt.Errorf("objstream: PlainSHA256 given for an object whose checksum is %s", hdr.Checksum)
	}
	if hdr.Compression == "" {
		hdr.Compression = CompressionZstd
	}
	if hdr.Compression != CompressionZstd && hdr.Compression != CompressionNone {
		return nil, fmt.Errorf("objstream: unknown compression %q (want %q or %q)", opts.Compression, CompressionZstd, CompressionNone)
	}
	level := opts.Level
	if level == 0 {
		level = DefaultLevel
	}
	if level < 1 || level > 22 {
		return nil, fmt.Errorf("objstream: zstd level %d out of range 1..22", opts.Level)
	}
	conc := opts.Concurrency
	if conc == 0 {
		conc = 1
	}
	if conc < 0 {
		return nil, fmt.Errorf("objstream: negative concurrency %d", opts.Concurrency)
	}
	switch {
	case opts.Unencrypted && len(opts.Recipients) > 0:
		return nil, errors.New("objstream: Options.Unencrypted set together with Recipients")
	case opts.Unencrypted:
		hdr.Encryption = EncryptionNone
	case len(opts.Recipients) == 0:
		return nil, errors.New("objstream: no age recipients given (set Options.Unencrypted to write an unencrypted object)")
	default:
		for i, r := range opts.Recipients {
			if r == nil {
				return nil, fmt.Errorf("objstream: recipient %d is nil", i+1)
			}
		}
		hdr.Encryption = EncryptionAge
	}
	if hdr.PlainSize < -1 {
		return nil, fmt.Errorf("objstream: invalid PlainSize %d (use -1 for unknown)", opts.PlainSize)
	}
	if hdr.PlainSHA256 != nil && len(hdr.PlainSHA256) != sumSize {
		return nil, fmt.Errorf("objstream: PlainSHA256 has %d bytes, want %d", len(hdr.PlainSHA256), sumSize)
	}
	if hdr.Created.IsZero() {
		hdr.Created = time.Now()
	}
	if opts.Signer != nil {
		if opts.Name == "" || hdr.PlainSize < 0 || hdr.PlainSHA256 == nil {
			return nil, errors.New("objstream: a signed object needs Options.Name, PlainSize and PlainSHA256")
		}
		hdr.SignerID = opts.Signer.pub.id
		hdr.Signature = opts.Signer.sign(opts.Name, hdr.PlainSHA256, hdr.PlainSize)
	}

	hb, err := marshalHeader(hdr)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hb); err != nil {
		return nil, fmt.Errorf("objstream: writing header: %w", err)
	}

	ow := &writer{
		top:  w,
		alg:  hdr.Checksum,
		ver:  hdr.Version,
		size: hdr.PlainSize,
		sum:  bytes.Clone(hdr.PlainSHA256),
	}
	if !opts.TrustSHA256 || ow.sum == nil {
		ow.hash = hdr.Checksum.newHash()
	}
	if hdr.Encryption == EncryptionAge {
		ow.aenc, err = age.Encrypt(w, opts.Recipients...)
		if err != nil {
			return nil, fmt.Errorf("objstream: starting age encryption: %w", err)
		}
		ow.top = ow.aenc
	}
	if hdr.Compression == CompressionZstd {
		ow.pool = pool
		ow.key = encKey{level: zstd.EncoderLevelFromZstd(level), conc: conc}
		if ow.key.level == adaptiveDefKey.level {
			size := int64(-1)
			if hdr.PlainSize >= 0 {
				size = hdr.PlainSize + TrailerSize
			}
			ow.azenc = newAdaptiveEncoder(ow.top, pool, size, conc)
			ow.top = ow.azenc
			return ow, nil
		}
		ow.zenc, err = pool.newEncoder(ow.key)
		if err != nil {
			return nil, fmt.Errorf("objstream: starting zstd: %w", err)
		}
		if hdr.PlainSize >= 0 {
			// A known size goes into the frame header, which also
			// lets the encoder pick a smaller window for small
			// objects (less memory for writer and reader).
			ow.zenc.ResetContentSize(ow.top, hdr.PlainSize+TrailerSize)
		} else {
			ow.zenc.Reset(ow.top)
		}
		ow.top = ow.zenc
	}
	return ow, nil
}

// Writer is what NewWriter returns: an io.WriteCloser that also reports
// the plaintext's checksum once closed.
type Writer interface {
	io.WriteCloser
	// Sum returns the plaintext's checksum after a successful Close
	// (else one with nil Bytes), so callers recording a checksum need
	// not hash again.
	Sum() Sum
}

// Sum implements Writer.
func (w *writer) Sum() Sum {
	if !w.closed || w.err != nil {
		return Sum{Alg: w.alg}
	}
	return Sum{Alg: w.alg, Bytes: w.final}
}

// Write compresses, encrypts and writes p.
func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("objstream: write after Close")
	}
	n, err := w.top.Write(p)
	if w.hash != nil {
		w.hash.Write(p[:n])
	}
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("objstream: writing object: %w", err)
		return n, w.err
	}
	if w.size >= 0 && w.n > w.size {
		w.err = fmt.Errorf("objstream: wrote %d bytes, more than the declared Options.PlainSize %d (use -1 when the size is not known in advance)", w.n, w.size)
		return n, w.err
	}
	return n, nil
}

// Close writes the trailer and flushes all layers. It does not close the
// underlying writer. Calling Close again returns the first result.
func (w *writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		w.release()
		return w.err
	}
	sum := w.sum
	if w.hash != nil {
		sum = w.hash.Sum(nil)
	}
	if w.size >= 0 && w.n != w.size {
		w.err = fmt.Errorf("objstream: wrote %d bytes, but PlainSize declared %d", w.n, w.size)
	} else if w.sum != nil && !bytes.Equal(sum, w.sum) {
		w.err = fmt.Errorf("objstream: plaintext SHA-256 %x does not match the declared PlainSHA256 %x", sum, w.sum)
	}
	if w.err != nil {
		w.release()
		return w.err
	}
	w.final = sum
	var tr [TrailerSize]byte
	if _, err := w.top.Write(appendTrailer(tr[:0], w.ver, w.n, sum)); err != nil {
		w.err = fmt.Errorf("objstream: writing trailer: %w", err)
		w.release()
		return w.err
	}
	if w.azenc != nil {
		err := w.azenc.Close()
		w.azenc = nil
		if err != nil {
			w.err = fmt.Errorf("objstream: finishing zstd: %w", err)
			return w.err
		}
	}
	if w.zenc != nil {
		if err := w.zenc.Close(); err != nil {
			w.err = fmt.Errorf("objstream: finishing zstd: %w", err)
			w.zenc = nil
			return w.err
		}
		w.pool.putEncoder(w.key, w.zenc)
		w.zenc = nil
	}
	if w.aenc != nil {
		if err := w.aenc.Close(); err != nil {
			w.err = fmt.Errorf("objstream: finishing age encryption: %w", err)
			return w.err
		}
	}
	return nil
}

// release frees the zstd encoder after a failure without finishing the
// object (the output is unusable anyway; no trailer is written).
func (w *writer) release() {
	if w.azenc != nil {
		w.azenc.release()
		w.azenc = nil
	}
	if w.zenc != nil {
		// Reset to a discarding writer so Close flushes nothing into the
		// object and stops any encoder goroutines.
		w.zenc.Reset(io.Discard)
		_ = w.zenc.Close()
		w.zenc = nil
	}
}
