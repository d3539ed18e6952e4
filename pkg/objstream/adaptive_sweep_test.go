package objstream

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestAdaptiveSizesAroundSample: objects of every size around the
// sample (empty, one byte, the sample with and without the trailer,
// several samples), size known or not, read back through the package and
// are one valid zstd frame whose declared content size, when known (and
// stored: not under 256 bytes), is the plaintext and trailer.
func TestAdaptiveSizesAroundSample(t *testing.T) {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, n := range []int{0, 1, adaptiveProbe - TrailerSize - 1, adaptiveProbe - TrailerSize, adaptiveProbe - TrailerSize + 1,
		adaptiveProbe - 1, adaptiveProbe, adaptiveProbe + 1, 3*adaptiveProbe + 17} {
		for kind, data := range map[string][]byte{"text": textPages(n, 7, true), "random": randomBytes(n, 8), "zeros": make([]byte, n)} {
			for _, known := range []bool{false, true} {
				t.Run(fmt.Sprintf("%d/%s/known %v", n, kind, known), func(t *testing.T) {
					opts := Options{Unencrypted: true, PlainSize: -1}
					if known {
						opts.PlainSize = int64(n)
					}
					obj := encode(t, data, opts)
					got, err := decode(obj, nil)
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("read back: %v (%d bytes, want %d)", err, len(got), n)
					}
					body := zstdBody(obj)
					var h zstd.Header
					if err := h.Decode(body); err != nil {
						t.Fatalf("frame header: %v", err)
					}
					// klauspost stores no content size under 256 bytes
					// unless the frame is single-segment.
					if known && (h.HasFCS || n+TrailerSize >= 256) && (!h.HasFCS || h.FrameContentSize != uint64(n+TrailerSize)) {
						t.Fatalf("frame content size %v %d, want %d", h.HasFCS, h.FrameContentSize, n+TrailerSize)
					}
					plain, err := dec.DecodeAll(body, nil)
					if err != nil || len(plain) != n+TrailerSize || !bytes.Equal(plain[:n], data) {
						t.Fatalf("plain zstd decode: %v, %d bytes", err, len(plain))
					}
				})
			}
		}
	}
}
