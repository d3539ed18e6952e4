package objstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/zeebo/blake3"
)

// TestBLAKE3Objects: an object written with ChecksumBLAKE3 is a version 2
// object naming its checksum, reads back through Read and WriteTo, and
// reports the BLAKE3 of its plaintext; the default is still a version 1
// object with a SHA-256 trailer, byte for byte what older readers expect.
func TestBLAKE3Objects(t *testing.T) {
	id, rcpt := testKey(t)
	ids := []age.Identity{id}
	big := walLike(1<<20+7, 31)
	for _, c := range allCombos() {
		for _, size := range []int{0, 47, 48, 49, 1<<20 + 7} {
			t.Run(fmt.Sprintf("%s/%d", c.name, size), func(t *testing.T) {
				data := big[:size]
				opts := c.opts(rcpt)
				opts.Checksum = ChecksumBLAKE3
				var buf bytes.Buffer
				w, err := NewWriter(&buf, opts)
				if err != nil {
					t.Fatal(err)
				}
				w.Write(data)
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				want := blake3.Sum256(data)
				if s := w.Sum(); s.Alg != ChecksumBLAKE3 || !bytes.Equal(s.Bytes, want[:]) {
					t.Fatalf("writer Sum = %v; want blake3:%x", s, want)
				}
				obj := buf.Bytes()
				if obj[7] != 2 {
					t.Fatalf("version byte %d, want 2", obj[7])
				}
				n := binary.BigEndian.Uint32(obj[8:12])
				if js := string(obj[12 : 12+n]); !strings.Contains(js, `"checksum":"blake3"`) {
					t.Fatalf("header %s does not name its checksum", js)
				}
				got, err := decode(obj, ids)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("decode: %v (equal %v)", err, bytes.Equal(got, data))
				}
				r, err := NewReader(bytes.NewReader(obj), ids)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				if r.Header.Version != 2 || r.Header.Checksum != ChecksumBLAKE3 {
					t.Fatalf("header version %d checksum %q", r.Header.Version, r.Header.Checksum)
				}
				if r.Sum().Bytes != nil {
					t.Fatal("Sum before the end of the object")
				}
				var out bytes.Buffer
				if _, err := r.WriteTo(&out); err != nil {
					t.Fatal(err)
				}
				if s := r.Sum(); s.Alg != ChecksumBLAKE3 || !bytes.Equal(s.Bytes, want[:]) {
					t.Fatalf("reader Sum = %v; want blake3:%x", s, want)
				}
				if !c.encrypted && c.compression == CompressionNone {
					if tr := obj[len(obj)-TrailerSize:]; string(tr[:8]) != trailerMagicV2 || !bytes.Equal(tr[16:], want[:]) {
						t.Fatalf("trailer %x", tr)
					}
				}
			})
		}
	}

	// The default: version 1, no checksum member, SHA-256 trailer.
	data := []byte("a version 1 object")
	obj := encode(t, data, Options{Compression: CompressionNone, Unencrypted: true, PlainSize: -1})
	n := binary.BigEndian.Uint32(obj[8:12])
	sum := sha256.Sum256(data)
	if obj[7] != 1 || strings.Contains(string(obj[12:12+n]), "checksum") {
		t.Fatalf("default object: version %d, header %s", obj[7], obj[12:12+n])
	}
	if tr := obj[len(obj)-TrailerSize:]; string(tr[:8]) != trailerMagicV1 || !bytes.Equal(tr[16:], sum[:]) {
		t.Fatalf("default trailer %x", tr)
	}
}

// TestBLAKE3Damage: every kind of damage to a version 2 object is
// reported as ErrCorrupt: a flipped byte anywhere in the plaintext or the
// trailer, a version byte turned back to 1 (with the header CRC fixed up,
// so only the trailer can tell), a header naming another checksum, and
// headers that are not valid version 2 headers.
func TestBLAKE3Damage(t *testing.T) {
	data := walLike(70000, 32)
	obj := encode(t, data, Options{Compression: CompressionNone, Unencrypted: true, PlainSize: -1, Checksum: ChecksumBLAKE3})
	l := locate(t, obj, false)
	for p := l.bodyStart; p < len(obj); p += 97 {
		b := bytes.Clone(obj)
		b[p] ^= 0x10
		if _, err := decode(b, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at %d: err = %v, want ErrCorrupt", p, err)
		}
	}
	for p := len(obj) - TrailerSize; p < len(obj); p++ {
		b := bytes.Clone(obj)
		b[p] ^= 0x01
		if _, err := decode(b, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("trailer flip at %d: err = %v, want ErrCorrupt", p, err)
		}
	}

	body := obj[l.hdrEnd:]
	sha := sha256.Sum256(data)
	shaBody := appendTrailer(bytes.Clone(data), 2, int64(len(data)), sha[:])
	for _, c := range []struct {
		name    string
		version byte
		js      string
		body    []byte
		ok      bool
	}{
		{"as written", 2, `{"checksum":"blake3","compression":"none","encryption":"none"}`, body, true},
		{"version 2 naming sha256", 2, `{"checksum":"sha256","compression":"none","encryption":"none"}`, shaBody, true},
		{"downgraded to version 1", 1, `{"checksum":"blake3","compression":"none","encryption":"none"}`, body, false},
		{"sha256 named, blake3 trailer", 2, `{"checksum":"sha256","compression":"none","encryption":"none"}`, body, false},
		{"blake3 named, sha256 sum", 2, `{"checksum":"blake3","compression":"none","encryption":"none"}`, shaBody, false},
		{"no checksum member", 2, `{"compression":"none","encryption":"none"}`, body, false},
		{"unknown checksum", 2, `{"checksum":"md5","compression":"none","encryption":"none"}`, body, false},
		{"plain_sha256 with blake3", 2, fmt.Sprintf(`{"checksum":"blake3","compression":"none","encryption":"none","plain_sha256":"%x"}`, sha), body, false},
		{"version 3", 3, `{"checksum":"blake3","compression":"none","encryption":"none"}`, body, false},
	} {
		got, err := decode(rawObjectV(c.version, c.js, c.body), nil)
		switch {
		case c.ok && (err != nil || !bytes.Equal(got, data)):
			t.Errorf("%s: %v", c.name, err)
		case !c.ok && !errors.Is(err, ErrCorrupt):
			t.Errorf("%s: err = %v, want ErrCorrupt", c.name, err)
		}
	}
}

// TestChecksumOptions: an unknown checksum, or a SHA-256 declared in
// advance for a BLAKE3 object, is refused before anything is written.
func TestChecksumOptions(t *testing.T) {
	sum := sha256.Sum256(nil)
	for _, o := range []Options{
		{Unencrypted: true, Checksum: "md5"},
		{Unencrypted: true, Checksum: ChecksumBLAKE3, PlainSHA256: sum[:]},
	} {
		var buf bytes.Buffer
		if _, err := NewWriter(&buf, o); err == nil || buf.Len() != 0 {
			t.Errorf("%+v: err = %v, %d bytes written", o, err, buf.Len())
		}
	}
}
