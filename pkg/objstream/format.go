package objstream

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Sentinel errors. Errors returned by this package wrap one of these (with
// detail) when they apply; test with errors.Is.
var (
	// ErrCorrupt reports an object that is damaged, truncated, tampered
	// with, or not in a format this package can read.
	ErrCorrupt = errors.New("objstream: corrupt object")
	// ErrNoIdentity reports an encrypted object for which no identity was
	// given, or none of those given matches its recipients.
	ErrNoIdentity = errors.New("objstream: no matching age identity")
)

// Format constants.
const (
	// Version is the format version this package writes.
	Version = 1

	// Compression values.
	CompressionZstd = "zstd"
	CompressionNone = "none"
	// Encryption values.
	EncryptionAge  = "age"
	EncryptionNone = "none"

	// MaxHeaderJSON is the largest JSON header accepted, in bytes.
	MaxHeaderJSON = 64 << 10

	// TrailerSize is the size of the trailer after the plaintext.
	TrailerSize = 48

	magic        = "PGDROBJ"
	trailerMagic = "PGDRSUM\x01"
	prefixSize   = len(magic) + 1 + 4 // magic, version, N
	crcSize      = 4
	sha256Size   = 32
)

// Header is the cleartext header of an object.
type Header struct {
	// Version is the format version (1).
	Version int
	// Compression is CompressionZstd or CompressionNone.
	Compression string
	// Encryption is EncryptionAge or EncryptionNone.
	Encryption string
	// PlainSize is the plaintext length, or -1 if the writer did not
	// record it.
	PlainSize int64
	// PlainSHA256 is the SHA-256 of the plaintext, or nil if the writer
	// did not record it.
	PlainSHA256 []byte
	// Created is when the object was written (zero if not recorded).
	Created time.Time
}

// headerJSON is the wire form of the JSON header.
type headerJSON struct {
	Compression string `json:"compression"`
	Encryption  string `json:"encryption"`
	PlainSize   *int64 `json:"plain_size,omitempty"`
	PlainSHA256 string `json:"plain_sha256,omitempty"`
	Created     string `json:"created,omitempty"`
}

// crc32c returns the CRC-32C (Castagnoli) of b.
func crc32c(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}

// marshalHeader returns the complete cleartext header bytes.
func marshalHeader(h Header) ([]byte, error) {
	hj := headerJSON{
		Compression: h.Compression,
		Encryption:  h.Encryption,
	}
	if h.PlainSize >= 0 {
		size := h.PlainSize
		hj.PlainSize = &size
	}
	if h.PlainSHA256 != nil {
		hj.PlainSHA256 = hex.EncodeToString(h.PlainSHA256)
	}
	if !h.Created.IsZero() {
		hj.Created = h.Created.UTC().Format(time.RFC3339)
	}
	js, err := json.Marshal(hj)
	if err != nil {
		return nil, fmt.Errorf("objstream: encoding header: %w", err)
	}
	if len(js) > MaxHeaderJSON {
		return nil, fmt.Errorf("objstream: header too large (%d bytes)", len(js))
	}
	buf := make([]byte, 0, prefixSize+len(js)+crcSize)
	buf = append(buf, magic...)
	buf = append(buf, Version)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(js)))
	buf = append(buf, js...)
	buf = binary.BigEndian.AppendUint32(buf, crc32c(buf))
	return buf, nil
}

// ReadHeader reads and checks the cleartext header of an object from r and
// returns it, without touching the body. It reads exactly the header's
// bytes, so r is left positioned at the start of the body. Use it to
// compare an existing object's recorded size and checksum (when the writer
// recorded them) without decrypting it.
//
// A damaged, truncated or unsupported header is reported as ErrCorrupt;
// other read errors are returned wrapped.
func ReadHeader(r io.Reader) (Header, error) {
	var prefix [prefixSize]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return Header{}, readErr("reading header", err)
	}
	if string(prefix[:len(magic)]) != magic {
		return Header{}, fmt.Errorf("%w: bad magic %q (not a pgdr object)", ErrCorrupt, prefix[:len(magic)])
	}
	if v := prefix[len(magic)]; v != Version {
		return Header{}, fmt.Errorf("%w: unsupported format version %d (this build reads version %d)", ErrCorrupt, v, Version)
	}
	n := binary.BigEndian.Uint32(prefix[len(magic)+1:])
	if n == 0 || n > MaxHeaderJSON {
		return Header{}, fmt.Errorf("%w: header length %d out of range 1..%d", ErrCorrupt, n, MaxHeaderJSON)
	}
	rest := make([]byte, int(n)+crcSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		return Header{}, readErr("reading header", err)
	}
	js := rest[:n]
	crc := crc32c(append(prefix[:], js...))
	if got := binary.BigEndian.Uint32(rest[n:]); got != crc {
		return Header{}, fmt.Errorf("%w: header checksum mismatch (stored %08x, computed %08x)", ErrCorrupt, got, crc)
	}
	return parseHeaderJSON(js)
}

func parseHeaderJSON(js []byte) (Header, error) {
	var hj headerJSON
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(&hj); err != nil {
		return Header{}, fmt.Errorf("%w: header JSON: %w", ErrCorrupt, err)
	}
	if dec.More() {
		return Header{}, fmt.Errorf("%w: header JSON: trailing data", ErrCorrupt)
	}
	h := Header{
		Version:     Version,
		Compression: hj.Compression,
		Encryption:  hj.Encryption,
		PlainSize:   -1,
	}
	switch h.Compression {
	case CompressionZstd, CompressionNone:
	default:
		return Header{}, fmt.Errorf("%w: unknown compression %q", ErrCorrupt, hj.Compression)
	}
	switch h.Encryption {
	case EncryptionAge, EncryptionNone:
	default:
		return Header{}, fmt.Errorf("%w: unknown encryption %q", ErrCorrupt, hj.Encryption)
	}
	if hj.PlainSize != nil {
		if *hj.PlainSize < -1 {
			return Header{}, fmt.Errorf("%w: invalid plain_size %d", ErrCorrupt, *hj.PlainSize)
		}
		h.PlainSize = *hj.PlainSize
	}
	if hj.PlainSHA256 != "" {
		sum, err := hex.DecodeString(hj.PlainSHA256)
		if err != nil || len(sum) != sha256Size {
			return Header{}, fmt.Errorf("%w: invalid plain_sha256 %q", ErrCorrupt, hj.PlainSHA256)
		}
		h.PlainSHA256 = sum
	}
	if hj.Created != "" {
		t, err := time.Parse(time.RFC3339, hj.Created)
		if err != nil {
			return Header{}, fmt.Errorf("%w: invalid created time: %w", ErrCorrupt, err)
		}
		h.Created = t
	}
	return h, nil
}

// readErr classifies an error from io.ReadFull on object bytes: a short
// read means the object is truncated (ErrCorrupt), anything else is an I/O
// error passed through.
func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: truncated object: %w", ErrCorrupt, what, err)
	}
	return fmt.Errorf("objstream: %s: %w", what, err)
}

// appendTrailer appends the 48-byte trailer for a plaintext of length n and
// SHA-256 sum.
func appendTrailer(dst []byte, n int64, sum []byte) []byte {
	dst = append(dst, trailerMagic...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	return append(dst, sum...)
}
