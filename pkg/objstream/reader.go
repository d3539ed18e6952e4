package objstream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

const (
	// readBufSize is the size of the Reader's hold-back buffer for Read.
	readBufSize = 64 << 10
	// writeToBufSize is the size of the buffer WriteTo decodes into and
	// writes from: large writes, few system calls, still cache-sized.
	writeToBufSize = 512 << 10
	// maxZstdWindow bounds the zstd window (and so the decoder's memory)
	// accepted from an object. The writer's levels use at most 8 MiB.
	maxZstdWindow = 32 << 20
	// maxEmptyReads bounds consecutive (0, nil) reads from a layer.
	maxEmptyReads = 100
)

// Reader reads and verifies the plaintext of an object. See the package
// documentation for what a successful read (ending in io.EOF) guarantees.
type Reader struct {
	// Header is the object's cleartext header.
	Header Header

	src  *srcReader    // the object bytes, recording I/O errors
	body io.Reader     // decoded plaintext || trailer
	zdec *zstd.Decoder // nil without compression, or once released
	pool *Pool         // where zdec goes back to, or nil
	hash hash.Hash
	n    int64 // plaintext bytes returned so far
	buf  []byte
	r, w int // pending decoded bytes are buf[r:w]
	eof  bool
	err  error  // sticky; io.EOF after a verified end
	sum  []byte // the verified plaintext checksum, once Read returned io.EOF
}

// Sum returns the plaintext's checksum (with the object's hash) once Read
// has returned io.EOF, so the whole plaintext was read and verified
// against it; else a Sum with nil Bytes. Callers comparing with a checksum
// of their own need not hash again.
func (r *Reader) Sum() Sum {
	if r.err != io.EOF {
		return Sum{Alg: r.Header.Checksum}
	}
	return Sum{Alg: r.Header.Checksum, Bytes: r.sum}
}

// srcReader wraps the object source and remembers the first error other
// than io.EOF, so that I/O failures are not mistaken for corruption.
type srcReader struct {
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// NewReader reads the object's header from r and prepares to read its
// plaintext. For an encrypted object it also reads the age header and finds
// the matching identity: ErrNoIdentity if identities is empty or none
// matches. identities is ignored for unencrypted objects.
//
// NewReader does not close r. It builds a fresh zstd decoder; see Pool for
// reusing them.
//
// NewReader applies no policy: unencrypted and unsigned objects are read.
// Repository content is untrusted, so readers of it use NewReaderOpts.
func NewReader(r io.Reader, identities []age.Identity) (*Reader, error) {
	return newReader(r, ReadOptions{Identities: identities}, nil)
}

// ReadOptions say what a Reader accepts.
type ReadOptions struct {
	// Identities decrypt age-encrypted objects.
	Identities []age.Identity
	// RequireEncrypted refuses objects whose header says encryption:
	// none, with ErrUnencrypted: set it whenever encryption is
	// configured, as anyone able to write to the storage can make one.
	RequireEncrypted bool
	// Verifier, when set, checks the object's signature (see Verifier)
	// for the object Name before any plaintext is returned.
	Verifier *Verifier
	// Name is the object's key in the repository; needed with Verifier.
	Name string
}

// NewReaderOpts is NewReader with a policy: see ReadOptions. Refusals
// wrap ErrUnencrypted, ErrUnsigned or ErrBadSignature.
func NewReaderOpts(r io.Reader, opts ReadOptions) (*Reader, error) {
	return newReader(r, opts, nil)
}

func newReader(r io.Reader, opts ReadOptions, pool *Pool) (*Reader, error) {
	identities := opts.Identities
	src := &srcReader{r: r}
	hdr, err := ReadHeader(src)
	if err != nil {
		return nil, err
	}
	if opts.RequireEncrypted && hdr.Encryption != EncryptionAge {
		what := "the object"
		if opts.Name != "" {
			what = "object " + opts.Name
		}
		return nil, fmt.Errorf("%w: %s has encryption %q in its header, and anyone able to write to the storage can make such an object", ErrUnencrypted, what, hdr.Encryption)
	}
	if opts.Verifier != nil {
		if opts.Name == "" {
			return nil, errors.New("objstream: ReadOptions.Verifier given without the object's Name")
		}
		if err := opts.Verifier.verify(hdr, opts.Name); err != nil {
			return nil, err
		}
	}
	or := &Reader{
		Header: hdr,
		src:    src,
		hash:   hdr.Checksum.newHash(),
		pool:   pool,
	}
	var body io.Reader = src
	if hdr.Encryption == EncryptionAge {
		if len(identities) == 0 {
			return nil, fmt.Errorf("%w: the object is encrypted with age, but no identities were given", ErrNoIdentity)
		}
		for i, id := range identities {
			if id == nil {
				return nil, fmt.Errorf("objstream: identity %d is nil", i+1)
			}
		}
		ar, err := age.Decrypt(src, identities...)
		if err != nil {
			return nil, or.classify("decrypting age header", err, len(identities))
		}
		body = ar
	}
	if hdr.Compression == CompressionZstd {
		if hdr.Encryption == EncryptionNone {
			// zstd issues small reads for block headers; the age
			// layer buffers whole chunks, the raw source may not.
			body = bufio.NewReaderSize(body, 32<<10)
		}
		or.zdec, err = pool.newDecoder(body)
		if err != nil {
			return nil, fmt.Errorf("objstream: starting zstd: %w", err)
		}
		body = or.zdec
	}
	or.body = body
	or.buf = getBuf(readBufSize)
	return or, nil
}

// Decode buffers are reused between Readers: a restore reads thousands of
// objects, and fresh zeroed buffers for each showed up in its profile.
var (
	smallBufs sync.Pool // *[]byte of readBufSize
	largeBufs sync.Pool // *[]byte of writeToBufSize
)

func getBuf(size int) []byte {
	sp := &smallBufs
	if size == writeToBufSize {
		sp = &largeBufs
	}
	if b, ok := sp.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, size)
}

func putBuf(b []byte) {
	switch cap(b) {
	case readBufSize:
		b = b[:readBufSize]
		smallBufs.Put(&b)
	case writeToBufSize:
		b = b[:writeToBufSize]
		largeBufs.Put(&b)
	}
}

// classify turns an error from the decoding layers into the package's
// error classes.
func (r *Reader) classify(what string, err error, nids int) error {
	if r.src.err != nil {
		// The source failed; whatever the layers made of it, it is
		// an I/O error, not corruption.
		return fmt.Errorf("objstream: %s: reading object: %w", what, r.src.err)
	}
	var nim *age.NoIdentityMatchError
	if errors.As(err, &nim) {
		given := "the identity given does not"
		if nids != 1 {
			given = fmt.Sprintf("none of the %d identities given", nids)
		}
		return fmt.Errorf("%w: %s match the object's recipients (recipient stanza types: %s); "+
			"wrong key, or a damaged recipient stanza: %w",
			ErrNoIdentity, given, strings.Join(nim.StanzaTypes, ", "), err)
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, what, err)
}

// Read reads plaintext. It returns io.EOF only after the trailer has been
// verified against the data returned and against the header.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	empty := 0
	for {
		if avail := r.w - r.r - TrailerSize; avail > 0 {
			if len(p) == 0 {
				return 0, nil
			}
			n := copy(p, r.buf[r.r:r.r+avail])
			r.hash.Write(p[:n])
			r.r += n
			r.n += int64(n)
			if r.Header.PlainSize >= 0 && r.n > r.Header.PlainSize {
				return 0, r.fail(fmt.Errorf("%w: object holds more than the %d bytes its header declares", ErrCorrupt, r.Header.PlainSize))
			}
			return n, nil
		}
		if r.eof {
			if err := r.verify(); err != nil {
				return 0, r.fail(err)
			}
			r.release(true)
			r.err = io.EOF
			return 0, io.EOF
		}
		if err := r.fill(&empty); err != nil {
			return 0, err
		}
	}
}

// fill moves the pending bytes (fewer than TrailerSize+1: at most
// TrailerSize) to the front of the buffer and reads more of the body after
// them. It counts consecutive empty reads in *empty.
func (r *Reader) fill(empty *int) error {
	if r.r > 0 {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	m, err := r.body.Read(r.buf[r.w:])
	r.w += m
	switch {
	case err == io.EOF:
		r.eof = true
	case err != nil:
		return r.fail(r.classify("decoding body", err, 0))
	case m == 0:
		*empty++
		if *empty >= maxEmptyReads {
			return r.fail(fmt.Errorf("objstream: decoding body: %w", io.ErrNoProgress))
		}
	default:
		*empty = 0
	}
	return nil
}

// WriteTo implements io.WriterTo (io.Copy uses it): it writes the rest of
// the plaintext to w and returns a nil error where Read would return
// io.EOF, that is only once the whole object was read and its trailer
// verified; Sum then returns the checksum. It decodes into a larger
// buffer than Read and writes straight from it, without the extra copy
// (and the small writes) of a copy loop. Data is hashed before it is
// written, and no more than the header's declared size is ever written;
// as with Read, what was written is not verified until WriteTo returns
// nil. An error from w is returned as it is (it is not ErrCorrupt) and
// is sticky, like any other.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if r.err != nil {
		if r.err == io.EOF {
			return 0, nil
		}
		return 0, r.err
	}
	if len(r.buf) < writeToBufSize {
		nb := getBuf(writeToBufSize)
		r.w = copy(nb, r.buf[r.r:r.w])
		r.r = 0
		putBuf(r.buf)
		r.buf = nb
	}
	var total int64
	empty := 0
	for {
		if avail := r.w - r.r - TrailerSize; avail > 0 {
			if r.Header.PlainSize >= 0 && r.n+int64(avail) > r.Header.PlainSize {
				return total, r.fail(fmt.Errorf("%w: object holds more than the %d bytes its header declares", ErrCorrupt, r.Header.PlainSize))
			}
			chunk := r.buf[r.r : r.r+avail]
			r.hash.Write(chunk)
			r.r += avail
			r.n += int64(avail)
			m, err := w.Write(chunk)
			total += int64(m)
			if err == nil && m != avail {
				err = io.ErrShortWrite
			}
			if err != nil {
				return total, r.fail(err)
			}
			continue
		}
		if r.eof {
			if err := r.verify(); err != nil {
				return total, r.fail(err)
			}
			r.release(true)
			r.err = io.EOF
			return total, nil
		}
		if err := r.fill(&empty); err != nil {
			return total, err
		}
	}
}

// verify checks the held-back trailer at the end of the decoded stream.
func (r *Reader) verify() error {
	tr := r.buf[r.r:r.w]
	if len(tr) != TrailerSize {
		return fmt.Errorf("%w: object body ends after %d bytes, too short for the %d-byte trailer (truncated?)",
			ErrCorrupt, r.n+int64(len(tr)), TrailerSize)
	}
	if string(tr[:8]) != trailerMagic(r.Header.Version) {
		return fmt.Errorf("%w: bad trailer magic (truncated or damaged object)", ErrCorrupt)
	}
	size := binary.BigEndian.Uint64(tr[8:16])
	sum := tr[16:]
	if size != uint64(r.n) {
		return fmt.Errorf("%w: trailer records %d plaintext bytes, read %d", ErrCorrupt, size, r.n)
	}
	got := r.hash.Sum(nil)
	if !bytes.Equal(got, sum) {
		return fmt.Errorf("%w: plaintext %s mismatch: trailer records %x, read data has %x", ErrCorrupt, r.Header.Checksum, sum, got)
	}
	if r.Header.PlainSize >= 0 && r.Header.PlainSize != r.n {
		return fmt.Errorf("%w: header records %d plaintext bytes, read %d", ErrCorrupt, r.Header.PlainSize, r.n)
	}
	if r.Header.PlainSHA256 != nil && !bytes.Equal(r.Header.PlainSHA256, got) {
		return fmt.Errorf("%w: plaintext SHA-256 mismatch: header records %x, read data has %x", ErrCorrupt, r.Header.PlainSHA256, got)
	}
	r.sum = got
	return nil
}

// fail records a sticky error, frees the decoder and returns err.
func (r *Reader) fail(err error) error {
	r.err = err
	r.release(false)
	return err
}

// release frees the buffers and the decoder; a decoder that is in a good
// state (reuse) goes back to the pool, if any.
func (r *Reader) release(reuse bool) {
	if r.zdec != nil {
		if reuse {
			r.pool.putDecoder(r.zdec)
		} else {
			r.zdec.Close()
		}
		r.zdec = nil
	}
	if r.buf != nil {
		putBuf(r.buf)
	}
	r.buf = nil
	r.r, r.w = 0, 0
}

// Close releases the Reader's resources. It does not close the underlying
// reader and does not verify anything: only a Read returning io.EOF
// means the object was read in full and verified.
func (r *Reader) Close() error {
	// Without a sticky error the decoder has seen no error and can be
	// reused.
	r.release(r.err == nil || r.err == io.EOF)
	if r.err == nil {
		r.err = errors.New("objstream: read after Close")
	}
	return nil
}
