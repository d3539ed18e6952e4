package objstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// legacyObject builds an object the way the first writers of format
// version 1 did: one zstd frame with a content checksum (xxhash64) and the
// library's 8 MiB window at the default level.
func legacyObject(t testing.TB, data []byte, rcpt age.Recipient) []byte {
	t.Helper()
	h := Header{Version: 1, Checksum: ChecksumSHA256, Compression: CompressionZstd, Encryption: EncryptionNone, PlainSize: -1, Created: time.Now()}
	if rcpt != nil {
		h.Encryption = EncryptionAge
	}
	hb, err := marshalHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Write(hb)
	var dst io.Writer = &buf
	var aw io.WriteCloser
	if rcpt != nil {
		if aw, err = age.Encrypt(&buf, rcpt); err != nil {
			t.Fatal(err)
		}
		dst = aw
	}
	zw, err := zstd.NewWriter(dst, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	zw.Write(data)
	zw.Write(appendTrailer(nil, 1, int64(len(data)), sum[:]))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if aw != nil {
		if err := aw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// frameHeader decodes the zstd frame header at the start of an
// unencrypted object's body.
func frameHeader(t *testing.T, obj []byte) zstd.Header {
	t.Helper()
	n := binary.BigEndian.Uint32(obj[8:12])
	var zh zstd.Header
	if err := zh.Decode(obj[prefixSize+int(n)+crcSize:]); err != nil {
		t.Fatal(err)
	}
	return zh
}

// TestLegacyObjects: objects written before the writer dropped the zstd
// frame checksum and shrank the window still read back, and their frame
// checksum is still verified.
func TestLegacyObjects(t *testing.T) {
	id, rcpt := testKey(t)
	data := walLike(3<<20+17, 21)
	for _, r := range []age.Recipient{rcpt, nil} {
		obj := legacyObject(t, data, r)
		got, err := decode(obj, []age.Identity{id})
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("encrypted=%v: legacy object: %v", r != nil, err)
		}
		if r != nil {
			continue
		}
		zh := frameHeader(t, obj)
		if !zh.HasCheckSum || zh.WindowSize != 8<<20 {
			t.Fatalf("the legacy object is not what it claims: checksum %v, window %d", zh.HasCheckSum, zh.WindowSize)
		}
		// The frame checksum is the last 4 bytes of an unencrypted
		// object: damage there is still reported.
		bad := bytes.Clone(obj)
		bad[len(bad)-2] ^= 0x40
		if _, err := decode(bad, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a damaged frame checksum read back with %v, want ErrCorrupt", err)
		}
	}
}

// TestWriterFrame: the writer emits no zstd frame checksum (the trailer's
// SHA-256 covers the same bytes) and a 512 KiB window at the fast and
// default levels, the library's 8 MiB above them.
func TestWriterFrame(t *testing.T) {
	data := walLike(2<<20, 22)
	for _, c := range []struct{ level, window int }{{1, 512 << 10}, {3, 512 << 10}, {5, 512 << 10}, {6, 8 << 20}, {19, 8 << 20}} {
		t.Run(fmt.Sprint("level=", c.level), func(t *testing.T) {
			obj := encode(t, data, Options{Unencrypted: true, Level: c.level, PlainSize: -1})
			zh := frameHeader(t, obj)
			if zh.HasCheckSum {
				t.Error("the frame has a content checksum")
			}
			if zh.SingleSegment || zh.WindowSize != uint64(c.window) {
				t.Errorf("window %d (single segment %v), want %d", zh.WindowSize, zh.SingleSegment, c.window)
			}
			if got, err := decode(obj, nil); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("decode: %v", err)
			}
		})
	}
}
