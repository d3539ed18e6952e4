package objstream

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"

	"github.com/zeebo/blake3"
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
	// Version is the newest format version this package reads and
	// writes. Objects with a SHA-256 trailer are written as version 1
	// (readable by every pgdr), objects with a BLAKE3 trailer as version 2.
	Version = 2

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

	magic          = "PGDROBJ"
	trailerMagicV1 = "PGDRSUM\x01"
	trailerMagicV2 = "PGDRSUM\x02"
	prefixSize     = len(magic) + 1 + 4 // magic, version, N
	crcSize        = 4
	sumSize        = 32 // SHA-256 and BLAKE3-256
)

// Checksum names the hash of the plaintext recorded in an object's
// trailer.
type Checksum string

// Checksums.
const (
	// ChecksumSHA256 is SHA-256 (format version 1, and version 2 objects
	// that name it).
	ChecksumSHA256 Checksum = "sha256"
	// ChecksumBLAKE3 is BLAKE3 with a 256-bit output (format version 2):
	// a cryptographic hash about twice as fast as hardware SHA-256 on
	// amd64 (AVX2), used for base-backup data there.
	ChecksumBLAKE3 Checksum = "blake3"
)

// newHash returns a hash for c; c must be valid.
func (c Checksum) newHash() hash.Hash {
	if c == ChecksumBLAKE3 {
		return blake3.New()
	}
	return sha256.New()
}

func (c Checksum) valid() bool { return c == ChecksumSHA256 || c == ChecksumBLAKE3 }

// Sum is a plaintext checksum and the hash it was made with.
type Sum struct {
	Alg   Checksum
	Bytes []byte
}

// Hex returns the checksum in lower-case hex.
func (s Sum) Hex() string { return hex.EncodeToString(s.Bytes) }

// String returns "alg:hex".
func (s Sum) String() string { return string(s.Alg) + ":" + s.Hex() }

// Header is the cleartext header of an object.
type Header struct {
	// Version is the format version (1 or 2).
	Version int
	// Checksum is the hash of the plaintext in the trailer: SHA-256 in
	// version 1, the header's "checksum" member in version 2.
	Checksum Checksum
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
	// SignerID is the ID of the key that signed the object, "" if
	// unsigned; Signature the Ed25519 signature (see Verifier).
	SignerID  string
	Signature []byte
}

// headerJSON is the wire form of the JSON header.
type headerJSON struct {
	Checksum    string `json:"checksum,omitempty"` // version 2, required there
	Compression string `json:"compression"`
	Encryption  string `json:"encryption"`
	PlainSize   *int64 `json:"plain_size,omitempty"`
	PlainSHA256 string `json:"plain_sha256,omitempty"`
	Created     string `json:"created,omitempty"`
	SignerID    string `json:"signer,omitempty"`
	Signature   string `json:"signature,omitempty"`
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
	if h.Version >= 2 {
		hj.Checksum = string(h.Checksum)
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
	if h.Signature != nil {
		hj.SignerID = h.SignerID
		hj.Signature = base64.StdEncoding.EncodeToString(h.Signature)
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
	buf = append(buf, byte(h.Version))
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
	v := prefix[len(magic)]
	if v < 1 || v > Version {
		return Header{}, fmt.Errorf("%w: unsupported format version %d (this build reads versions 1 to %d)", ErrCorrupt, v, Version)
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
	return parseHeaderJSON(int(v), js)
}

func parseHeaderJSON(version int, js []byte) (Header, error) {
	var hj headerJSON
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(&hj); err != nil {
		return Header{}, fmt.Errorf("%w: header JSON: %w", ErrCorrupt, err)
	}
	if dec.More() {
		return Header{}, fmt.Errorf("%w: header JSON: trailing data", ErrCorrupt)
	}
	h := Header{
		Version:     version,
		Checksum:    ChecksumSHA256,
		Compression: hj.Compression,
		Encryption:  hj.Encryption,
		PlainSize:   -1,
	}
	if version >= 2 {
		// A version 1 object has no checksum member (and a version 1
		// reader ignores one): only version 2 objects name their hash.
		h.Checksum = Checksum(hj.Checksum)
		if !h.Checksum.valid() {
			return Header{}, fmt.Errorf("%w: unknown checksum %q in a version %d header", ErrCorrupt, hj.Checksum, version)
		}
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
		if err != nil || len(sum) != sumSize {
			return Header{}, fmt.Errorf("%w: invalid plain_sha256 %q", ErrCorrupt, hj.PlainSHA256)
		}
		if h.Checksum != ChecksumSHA256 {
			return Header{}, fmt.Errorf("%w: plain_sha256 in an object whose checksum is %s", ErrCorrupt, h.Checksum)
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
	if hj.Signature != "" || hj.SignerID != "" {
		sig, err := base64.StdEncoding.DecodeString(hj.Signature)
		if err != nil || len(sig) != ed25519.SignatureSize || hj.SignerID == "" {
			return Header{}, fmt.Errorf("%w: malformed signature (signer %q)", ErrCorrupt, hj.SignerID)
		}
		h.SignerID, h.Signature = hj.SignerID, sig
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

// trailerMagic is the trailer's magic in an object of the given version.
func trailerMagic(version int) string {
	if version >= 2 {
		return trailerMagicV2
	}
	return trailerMagicV1
}

// appendTrailer appends the 48-byte trailer of a version's object for a
// plaintext of length n and checksum sum.
func appendTrailer(dst []byte, version int, n int64, sum []byte) []byte {
	dst = append(dst, trailerMagic(version)...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	return append(dst, sum...)
}
