package objstream

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
)

const segSize = 16 << 20 // one WAL segment

func writeObject(b *testing.B, dst io.Writer, data []byte, opts Options) {
	writeObjectPool(b, nil, dst, data, opts)
}

func writeObjectPool(b *testing.B, pool *Pool, dst io.Writer, data []byte, opts Options) {
	newWriter := NewWriter
	if pool != nil {
		newWriter = pool.NewWriter
	}
	w, err := newWriter(dst, opts)
	if err != nil {
		b.Fatal(err)
	}
	for p := data; len(p) > 0; {
		n := min(len(p), 128<<10)
		if _, err := w.Write(p[:n]); err != nil {
			b.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// countingDiscard counts bytes, to report the compression ratio.
type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkWrite pushes a 16 MiB WAL-like segment through NewWriter.
func BenchmarkWrite(b *testing.B) {
	_, rcpt := testKey(b)
	data := walLike(segSize, 11)
	for _, c := range allCombos() {
		for _, level := range []int{1, 3, 9} {
			if c.compression == CompressionNone && level != 3 {
				continue
			}
			b.Run(fmt.Sprintf("%s/level=%d", c.name, level), func(b *testing.B) {
				opts := c.opts(rcpt)
				opts.Level = level
				var out countingDiscard
				b.SetBytes(segSize)
				b.ReportAllocs()
				for b.Loop() {
					writeObject(b, &out, data, opts)
				}
				b.ReportMetric(float64(segSize)*float64(b.N)/float64(out.n), "ratio")
			})
		}
	}
	b.Run("zstd-age/level=3/pool", func(b *testing.B) {
		var pool Pool
		opts := Options{Recipients: []age.Recipient{rcpt}, PlainSize: -1}
		b.SetBytes(segSize)
		b.ReportAllocs()
		for b.Loop() {
			writeObjectPool(b, &pool, io.Discard, data, opts)
		}
	})
}

// BenchmarkRead reads a 16 MiB WAL-like segment back through NewReader.
func BenchmarkRead(b *testing.B) {
	id, rcpt := testKey(b)
	ids := []age.Identity{id}
	data := walLike(segSize, 11)
	var pool Pool
	for _, c := range append(allCombos(), combo{"zstd-age/pool", CompressionZstd, true}) {
		b.Run(c.name, func(b *testing.B) {
			var buf bytes.Buffer
			writeObject(b, &buf, data, c.opts(rcpt))
			obj := buf.Bytes()
			cbuf := make([]byte, 128<<10)
			newReader := NewReader
			if strings.HasSuffix(c.name, "/pool") {
				newReader = pool.NewReader
			}
			b.SetBytes(segSize)
			b.ReportAllocs()
			for b.Loop() {
				r, err := newReader(bytes.NewReader(obj), ids)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, r, cbuf)
				if err != nil || n != segSize {
					b.Fatal(n, err)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkSmallObject measures the fixed per-object cost (zstd and age
// setup) on a 4 KiB object, with and without a Pool.
func BenchmarkSmallObject(b *testing.B) {
	id, rcpt := testKey(b)
	data := walLike(4<<10, 12)
	for _, pooled := range []bool{false, true} {
		var pool *Pool
		newReader := NewReader
		if pooled {
			pool = new(Pool)
			newReader = pool.NewReader
		}
		opts := Options{Recipients: []age.Recipient{rcpt}, PlainSize: -1}
		b.Run(fmt.Sprintf("write/pool=%v", pooled), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				writeObjectPool(b, pool, io.Discard, data, opts)
			}
		})
		b.Run(fmt.Sprintf("read/pool=%v", pooled), func(b *testing.B) {
			var buf bytes.Buffer
			writeObject(b, &buf, data, opts)
			obj := buf.Bytes()
			b.ReportAllocs()
			for b.Loop() {
				r, err := newReader(bytes.NewReader(obj), []age.Identity{id})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkWriteParallel runs one compress+encrypt stream per goroutine,
// like a base backup with several upload streams.
func BenchmarkWriteParallel(b *testing.B) {
	_, rcpt := testKey(b)
	data := walLike(segSize, 13)
	opts := Options{Recipients: []age.Recipient{rcpt}, PlainSize: -1}
	b.SetBytes(segSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			writeObject(b, io.Discard, data, opts)
		}
	})
}
