// Package objstream implements pgdr's versioned object stream format: the
// byte layout in which every WAL segment, base-backup file and manifest is
// stored in a repository.
//
// An object is the plaintext compressed with zstd
// (github.com/klauspost/compress/zstd) and then encrypted with age
// (filippo.io/age, X25519 recipients), with the plaintext's length and
// checksum (SHA-256, or BLAKE3 in version 2 objects) recorded inside the
// encrypted, compressed stream and verified on every read. Compression and encryption can each be switched off, but
// encryption only explicitly (Options.Unencrypted).
//
// # Object layout, versions 1 and 2
//
// The two versions differ only in the hash of the plaintext in the trailer:
// SHA-256 in version 1, the hash the header names in version 2 (BLAKE3 for
// the objects this package writes as version 2). The writer writes version
// 1 unless Options.Checksum asks for BLAKE3, so WAL segments and manifests
// stay readable by every pgdr. Base-backup data uses BLAKE3 by default on
// amd64 (pgdr-agent backup --checksum), where it hashes about twice as
// fast as SHA-256 with the SHA extensions (4.1 against 1.9 GB/s on one
// core of the development machine); hashing was the largest cost of a
// restore. The BLAKE3 library has no assembly for other architectures,
// where SHA-256 stays the default.
//
// All integers are big-endian. An object is a cleartext header followed by
// the body:
//
//	offset  size  field
//	0       7     magic "PGDROBJ" (0x50 0x47 0x44 0x52 0x4F 0x42 0x4A)
//	7       1     format version, 0x01 or 0x02
//	8       4     N, uint32: length of the JSON header; 1 <= N <= 65536
//	12      N     JSON header, UTF-8 (see below)
//	12+N    4     CRC-32C (Castagnoli) of bytes [0, 12+N)
//	16+N    ...   body, up to the end of the object
//
// The CRC-32C makes any accidental change to the cleartext header (which is
// not covered by age's authentication) detectable before anything else is
// done with the object, including by [ReadHeader]. It is a checksum, not a
// MAC: integrity of the content rests on the trailer and on age.
//
// The JSON header is an object with these members:
//
//	"checksum"      string, version 2 only, required there: "sha256" or
//	                "blake3", the hash in the trailer (a version 1
//	                header has no such member, and a version 1 reader
//	                ignores one: its hash is always SHA-256)
//	"compression"   string, required: "zstd" or "none"
//	"encryption"    string, required: "age" or "none"
//	"plain_size"    integer, optional: plaintext length in bytes; absent or
//	                -1 when the writer did not know it in advance
//	"plain_sha256"  string, optional: lower-case hex SHA-256 (64 digits) of
//	                the plaintext, present when the writer knew it in
//	                advance; only in objects whose checksum is SHA-256
//	"created"       string: RFC 3339 time the object was written, in UTC
//	                (always written; optional for the reader)
//	"signer"        string, optional: ID of the Ed25519 key that signed
//	                the object (first 8 bytes of the SHA-256 of the public
//	                key, hex); present together with "signature"
//	"signature"     string, optional: standard base64 of the Ed25519
//	                signature over "pgdr-object-signature-v1\n" + the
//	                object's name (its key in the repository) + "\nsha256:"
//	                + plain_sha256 + "\nsize:" + plain_size (decimal) + "\n";
//	                a signed object always has plain_size and plain_sha256
//
// Members the reader does not know are ignored, so later writers may add
// fields without bumping the version. A compression or encryption value the
// reader does not know is an error ([ErrCorrupt]): such an object cannot be
// read correctly. A new body layout gets a new version byte; a reader
// refuses a version it does not know (ErrCorrupt naming the version).
//
// The body is
//
//	age( zstd( plaintext || trailer ) )
//
// where the age layer is present only if "encryption" is "age" and the zstd
// layer only if "compression" is "zstd"; with both "none" the body is the
// plaintext followed by the trailer. The age layer is a complete age v1 file
// (header with one stanza per recipient, then the STREAM payload); the zstd
// layer is one or more zstd frames (the writer emits one frame, without
// the optional xxhash64 content checksum: the trailer's checksum covers the
// same bytes; objects from earlier writers carry it, and the reader still
// verifies it when present; at the default level, with the fastest encoder
// where a sample of the object shows it compresses about as well, adaptive.go).
// The trailer is 48 bytes:
//
//	offset  size  field
//	0       8     magic "PGDRSUM\x01" (version 1) or "PGDRSUM\x02" (version 2)
//	8       8     uint64 plaintext length in bytes
//	16      32    the checksum of the plaintext: SHA-256 in version 1, the
//	              header's "checksum" (BLAKE3: its default 32-byte output)
//	              in version 2
//
// The trailer magic ties the trailer to the version: a version 2 object
// whose version byte is changed to 1 (and its header CRC recomputed) fails
// on the trailer, so an object cannot be made to be checked with another
// hash than the one it was written with.
//
// # Reading and verification
//
// [NewReader] parses and checks the cleartext header and, for encrypted
// objects, the age header (which is where a wrong or missing identity is
// detected). Read then streams the plaintext: it decrypts and decompresses
// incrementally, holding back the last 48 bytes it has decoded, so memory
// stays bounded whatever the size of the object: about 200 KiB of buffers
// plus twice the zstd window, which the reader accepts up to 32 MiB and
// this package's writer sets to 512 KiB at levels 1-5 (8 MiB above, and in
// objects from earlier writers). When the
// decoded stream ends, the held-back bytes must be a trailer whose length and
// checksum match the plaintext that was returned, and the header's
// plain_size and plain_sha256, when present, must match too. Only then does
// Read return io.EOF. A caller that sees io.EOF has therefore received
// exactly the plaintext that was written; a caller that stops early has no
// such guarantee, and must not trust data from a read that ended in an
// error. [Reader.WriteTo] (which io.Copy uses) does the same checks and
// returns nil where Read would return io.EOF; it decodes into a 512 KiB
// buffer and writes from it directly, saving a copy and many small writes.
//
// These checks detect damage and truncation. They are not signatures: age
// encrypts to public keys, so whoever can write to the repository and knows
// a recipient (or, for an unencrypted object, anyone who can write to it)
// can replace an object with a different valid one. Authenticity comes from
// [ReadOptions]: RequireEncrypted refuses an object stored unencrypted
// ([ErrUnencrypted]) and a [Verifier] checks, before any plaintext is
// returned, that the header's signature is by a trusted key over the name
// the caller expects and the header's plain_size and plain_sha256, which the
// plaintext must then match ([ErrUnsigned], [ErrBadSignature]). [Options]
// Signer and Name make a writer sign. [NewReader] applies no such policy.
//
// # Errors
//
// Errors are wrapped with detail and can be tested with errors.Is:
//
//   - [ErrCorrupt]: bad magic, unsupported version, bad header CRC or JSON,
//     unknown compression or encryption, a malformed age header or bad age
//     header MAC, failed authentication of an age payload chunk, a zstd
//     error, trailing data, truncation anywhere, or a length or checksum
//     mismatch between trailer, header and the plaintext read.
//   - [ErrNoIdentity]: the object is encrypted and no identity was given, or
//     none of the given identities matches a recipient stanza of the
//     object's age header.
//   - Any other error is an I/O error from the underlying reader or writer,
//     wrapped unchanged (it is not reported as ErrCorrupt).
//
// An X25519 recipient stanza whose bytes are damaged (but still well-formed)
// cannot be told apart from a stanza for a different key: age's unwrap just
// fails to authenticate. Such damage is therefore reported as ErrNoIdentity,
// not ErrCorrupt; the error text says so. Damage that breaks the stanza's
// syntax, the age version line or the header MAC is ErrCorrupt. Damage
// anywhere else in an encrypted object is ErrCorrupt. For unencrypted objects
// the zstd checks, the header CRC and the trailer's checksum catch all damage,
// reported as ErrCorrupt. The one kind of damage that is not reported is a
// change to an unencrypted zstd body that zstd decodes to exactly the same
// bytes (for example a larger Window_Descriptor in the frame header, or
// some bits of an entropy table that no symbol uses): the
// object's bytes differ from what was written, but the plaintext is intact,
// and it is still verified against the trailer's checksum.
//
// # Writing
//
// [NewWriter] writes the cleartext header (and the age header) at once, then
// streams: Write hashes the plaintext and feeds it through zstd and age, and
// Close appends the trailer and flushes zstd and age. Close does not close
// the underlying writer. If Options.PlainSize or Options.PlainSHA256 is set
// and the data written does not match, Close reports an error and the
// output must be discarded (it would not read back).
//
// # Performance
//
// Writer and Reader run synchronously in the caller's goroutine (zstd
// encoder concurrency 1 unless Options.Concurrency says otherwise, decoder
// concurrency 1), so N parallel streams use about N cores. On one core of
// the development machine a 16 MiB WAL-like segment takes about 55 ms to
// write at the default level 3 (about 40 ms at level 1) with zstd and age,
// and about 25 ms to read back. Per byte, the SHA-256 of the plaintext
// (hardware-accelerated where the CPU has the SHA extensions) costs about
// half as much as zstd at level 3 when writing and more than zstd when
// reading; BLAKE3 (AVX2) costs about half as much as SHA-256. A zstd
// encoder at level 3 holds about 3 MiB while writing a large object (19
// MiB at levels 6 and above, with their 8 MiB window); setting one up
// costs a fraction of a millisecond. Processes that handle
// many objects should use a [Pool], which reuses encoders and decoders.
//
// Nothing in this package uses package-level mutable state; a Writer or
// Reader must not be used from several goroutines at once, but any number of
// them can run in parallel.
package objstream
