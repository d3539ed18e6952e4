package objstream

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// textPages is like a heap file of random text: 8 KiB pages of rows of
// 256 random hex digits, each behind a tuple header (zstd shrinks it to
// about half, mostly with entropy coding). Without headers, the digits
// alone.
func textPages(n int, seed uint64, headers bool) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]byte, 0, n+8192)
	raw := make([]byte, 128)
	for row := uint32(0); len(out) < n; row++ {
		if headers {
			out = append(out, 0xe3, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 9, 0x18, 0, 0, 0)
			out = binary.LittleEndian.AppendUint32(out, row)
			out = append(out, 0x0b, 0x04, 0, 0)
		}
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		out = hex.AppendEncode(out, raw)
	}
	return out[:n]
}

// randomBytes cannot be compressed.
func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(rng.Uint32())
	}
	return out
}

// zstdBody is the zstd layer of an unencrypted object.
func zstdBody(obj []byte) []byte {
	return obj[16+binary.BigEndian.Uint32(obj[8:12]):]
}

// zstdStream compresses data as one frame with the settings the writer
// uses for level l.
func zstdStream(t *testing.T, data []byte, l zstd.EncoderLevel, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(encoderWindow(l)), zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	if size >= 0 {
		enc.ResetContentSize(&buf, size)
	} else {
		enc.Reset(&buf)
	}
	if _, err := enc.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDefaultLevelPicksEncoder: at the default level, an object is one
// frame of the encoder its sample chose: the fastest for random text
// (smaller and about twice as cheap), for data that cannot be compressed
// and for data both compress alike (WAL-like pages); the default one for
// an object the fastest encoder would store whole but the default one
// shrinks, and for an object smaller than the sample. All read back. The
// same holds for a writer from a Pool whose encoders run concurrently
// (wal-push's): the choice is made the same way, and the object's frame
// is the same bytes.
func TestDefaultLevelPicksEncoder(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want zstd.EncoderLevel
	}{
		{"random text", textPages(1<<20, 1, true), zstd.SpeedFastest},
		{"hex digits alone", textPages(1<<20, 4, false), zstd.SpeedDefault},
		{"random bytes", randomBytes(1<<20, 5), zstd.SpeedFastest},
		{"pages like WAL", walLike(1<<20, 2), zstd.SpeedFastest},
		{"text smaller than the sample", textPages(adaptiveProbe/2, 3, true), zstd.SpeedDefault},
	} {
		for _, conc := range []int{0, 2} {
			for _, known := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/size known %v/pool concurrency %d", c.name, known, conc), func(t *testing.T) {
					opts := Options{Unencrypted: true, PlainSize: -1}
					if known {
						opts.PlainSize = int64(len(c.data))
					}
					var obj []byte
					if conc == 0 {
						obj = encode(t, c.data, opts)
					} else {
						obj = encodeWith(t, &Pool{Concurrency: conc}, c.data, opts)
					}
					got, err := decode(obj, nil)
					if err != nil || !bytes.Equal(got, c.data) {
						t.Fatalf("read back: %v (%d bytes, want %d)", err, len(got), len(c.data))
					}
					var tr [TrailerSize]byte
					sum := ChecksumSHA256.newHash()
					sum.Write(c.data)
					plain := append(bytes.Clone(c.data), appendTrailer(tr[:0], 1, int64(len(c.data)), sum.Sum(nil))...)
					size := int64(-1)
					if known {
						size = int64(len(plain))
					}
					want := zstdStream(t, plain, c.want, size)
					if body := zstdBody(obj); !bytes.Equal(body, want) {
						t.Fatalf("the zstd layer (%d bytes) is not the %v encoder's frame (%d bytes)", len(body), c.want, len(want))
					}
				})
			}
		}
	}
}

// TestDefaultLevelPipelines: a writer with concurrency (wal-push's, on a
// multi-core host) pipelines the encoder of an object whose sample the
// fastest encoder compresses to adaptivePipeRatio or more (random text,
// data that cannot be compressed), and encodes in the caller's goroutine
// an object that compresses much better (pgbench-like pages, where the
// hand-offs cost more than they save) or that is smaller than the sample.
func TestDefaultLevelPipelines(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want int
	}{
		{"random text", textPages(1<<20, 1, true), 2},
		{"random bytes", randomBytes(1<<20, 5), 2},
		{"zeroed pages", make([]byte, 1<<20), 1},
		{"text smaller than the sample", textPages(adaptiveProbe/2, 3, true), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := (&Pool{Concurrency: 2}).NewWriter(&buf, Options{Unencrypted: true, PlainSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			az := w.(*writer).azenc
			if _, err := w.Write(c.data); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if az.key.conc != c.want {
				t.Errorf("encoder concurrency %d, want %d", az.key.conc, c.want)
			}
			if got, err := decode(buf.Bytes(), nil); err != nil || !bytes.Equal(got, c.data) {
				t.Fatalf("read back: %v", err)
			}
		})
	}
}
