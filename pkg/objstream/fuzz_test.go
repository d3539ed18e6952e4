package objstream

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"filippo.io/age"
)

// fuzzIdentity is a fixed key so that seeds stay valid across runs. It
// protects nothing.
const fuzzIdentity = "AGE-SECRET-KEY-1QYY7UHL63WKCKL98R3KMVWNKLVM8LTL2GHFCQ9DANMF0JXMSKD6Q2K0NM3"

// FuzzNewReader feeds arbitrary bytes to NewReader and Read. They must
// never panic, and any successful read must be self-consistent.
func FuzzNewReader(f *testing.F) {
	id, err := age.ParseX25519Identity(fuzzIdentity)
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range allCombos() {
		for _, data := range [][]byte{nil, []byte("x"), walLike(3000, 10)} {
			opts := c.opts(id.Recipient())
			f.Add(encode(f, data, opts))
			opts.PlainSize = int64(len(data))
			f.Add(encode(f, data, opts))
		}
	}
	// Objects as the first writers made them (zstd frame checksum, 8 MiB
	// window).
	f.Add(legacyObject(f, walLike(3000, 10), id.Recipient()))
	f.Add(legacyObject(f, walLike(3000, 10), nil))
	f.Add([]byte("PGDROBJ\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, obj []byte) {
		if _, err := ReadHeader(bytes.NewReader(obj)); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadHeader on an in-memory object: unexpected error class: %v", err)
		}
		r, err := NewReader(bytes.NewReader(obj), []age.Identity{id})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoIdentity) {
				t.Fatalf("NewReader: unexpected error class: %v", err)
			}
			return
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Read: unexpected error class: %v", err)
			}
			return
		}
		if r.Header.PlainSize >= 0 && int64(len(got)) != r.Header.PlainSize {
			t.Fatalf("read %d bytes, header says %d", len(got), r.Header.PlainSize)
		}
		// WriteTo must agree with Read.
		got2, err := decodeWriteTo(obj, []age.Identity{id})
		if err != nil || !bytes.Equal(got, got2) {
			t.Fatalf("WriteTo: %v (equal %v) where Read succeeded", err, bytes.Equal(got, got2))
		}
	})
}
