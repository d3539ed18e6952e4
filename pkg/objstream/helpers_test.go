package objstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"filippo.io/age"
)

// walLike returns n deterministic bytes that resemble PostgreSQL WAL from a
// pgbench run: 8 KiB pages with a page header, then records with a small
// header, increasing LSNs, random-looking keys and balances, blank-padded
// filler, and now and then a full-page image of mostly random bytes.
func walLike(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, 0, n+8192)
	lsn := uint64(0x16B3740000)
	var rec []byte
	for len(out) < n {
		page := make([]byte, 0, 8192)
		page = binary.LittleEndian.AppendUint16(page, 0xD110) // magic
		page = binary.LittleEndian.AppendUint16(page, 0x0005) // info
		page = binary.LittleEndian.AppendUint32(page, 1)      // timeline
		page = binary.LittleEndian.AppendUint64(page, lsn)
		page = binary.LittleEndian.AppendUint32(page, 0)
		for len(page) < 8192 {
			rec = rec[:0]
			kind := rng.IntN(100)
			switch {
			case kind < 6: // full-page image: header then random data
				rec = append(rec, make([]byte, 24)...)
				fpi := make([]byte, 1024+8*rng.IntN(384))
				for i := 0; i < len(fpi); i += 8 {
					binary.LittleEndian.PutUint64(fpi[i:], rng.Uint64())
				}
				// Half of a page image is a hole of zeros.
				clear(fpi[len(fpi)/2:])
				rec = append(rec, fpi...)
			default: // pgbench UPDATE/INSERT-like heap record
				rec = binary.LittleEndian.AppendUint32(rec, uint32(54+84))
				rec = binary.LittleEndian.AppendUint32(rec, uint32(rng.IntN(1<<20))) // xid
				rec = binary.LittleEndian.AppendUint64(rec, lsn-uint64(rng.IntN(4096)))
				rec = append(rec, 0x10, 0x40, 0, 0)
				rec = binary.LittleEndian.AppendUint32(rec, rng.Uint32()) // crc
				rec = append(rec, 0xff, 0x03, 0x7f, 0x06, 0x00, 0x00, 0x40, 0x06, 0x00, 0x00, 0x64, 0x40, 0x00, 0x00)
				rec = binary.LittleEndian.AppendUint32(rec, uint32(rng.IntN(100000))) // aid
				rec = binary.LittleEndian.AppendUint32(rec, uint32(rng.IntN(10)))     // bid
				rec = binary.LittleEndian.AppendUint32(rec, uint32(rng.IntN(10000)-5000))
				rec = append(rec, bytes.Repeat([]byte{' '}, 84)...)
			}
			lsn += uint64(len(rec))
			page = append(page, rec...)
		}
		out = append(out, page[:8192]...)
	}
	return out[:n]
}

// testKey returns a fresh identity and its recipient.
func testKey(t testing.TB) (*age.X25519Identity, age.Recipient) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id, id.Recipient()
}

// combo is one compression × encryption combination.
type combo struct {
	name        string
	compression string
	encrypted   bool
}

func allCombos() []combo {
	return []combo{
		{"zstd-age", CompressionZstd, true},
		{"zstd-none", CompressionZstd, false},
		{"none-age", CompressionNone, true},
		{"none-none", CompressionNone, false},
	}
}

func (c combo) opts(rcpt age.Recipient) Options {
	o := Options{Compression: c.compression, PlainSize: -1}
	if c.encrypted {
		o.Recipients = []age.Recipient{rcpt}
	} else {
		o.Unencrypted = true
	}
	return o
}

// encode writes data as an object, in chunks of varying size.
func encode(t testing.TB, data []byte, opts Options) []byte {
	t.Helper()
	return encodeWith(t, nil, data, opts)
}

// encodeWith is encode with a writer from p (the package-level NewWriter
// when p is nil).
func encodeWith(t testing.TB, p *Pool, data []byte, opts Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w Writer
	var err error
	if p != nil {
		w, err = p.NewWriter(&buf, opts)
	} else {
		w, err = NewWriter(&buf, opts)
	}
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	for i, p := 0, data; len(p) > 0; i++ {
		n := min(len(p), 1+(i*7919)%(300<<10))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// decode reads a whole object, returning the plaintext and the first
// error (from NewReader or Read; nil after a clean io.EOF). It reads the
// object twice, through Read and through WriteTo, and reports an error
// that is none of the package's classes if the two disagree.
func decode(obj []byte, ids []age.Identity) ([]byte, error) {
	got, err := decodeRead(obj, ids)
	got2, err2 := decodeWriteTo(obj, ids)
	if errClass(err) != errClass(err2) || err == nil && !bytes.Equal(got, got2) {
		return nil, fmt.Errorf("Read and WriteTo disagree: Read: %v (%d bytes); WriteTo: %v (%d bytes)", err, len(got), err2, len(got2))
	}
	return got, err
}

func decodeRead(obj []byte, ids []age.Identity) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(obj), ids)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// decodeWriteTo reads a whole object through WriteTo, after a short Read
// for some objects so that WriteTo also starts with pending bytes.
func decodeWriteTo(obj []byte, ids []age.Identity) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(obj), ids)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	if len(obj)%2 == 1 {
		var p [100]byte
		n, err := r.Read(p[:])
		buf.Write(p[:n])
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return buf.Bytes(), err
		}
	}
	n, err := r.WriteTo(&buf)
	if err == nil && r.Sum().Bytes == nil {
		return nil, errors.New("WriteTo returned nil but Sum is nil")
	}
	if int(n) > buf.Len() {
		return nil, fmt.Errorf("WriteTo reported %d bytes, wrote fewer", n)
	}
	return buf.Bytes(), err
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrCorrupt):
		return "corrupt"
	case errors.Is(err, ErrNoIdentity):
		return "no identity"
	}
	return "other"
}
