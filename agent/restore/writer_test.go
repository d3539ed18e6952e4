package restore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgdr/pgdr/agent/backup"
)

// TestInterleavePlan: small files are spread evenly after the large ones.
func TestInterleavePlan(t *testing.T) {
	var plan []filePlan
	for i, size := range []int64{3 << 20, 2 << 20, 1 << 20, 900, 800, 700, 600, 500} {
		plan = append(plan, filePlan{f: backup.File{Path: fmt.Sprint(i), Size: size}})
	}
	var got string
	for _, p := range interleave(plan) {
		got += p.f.Path
	}
	if want := "03145267"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
}

// TestKickWriter: the data lands at its offsets, and every kickSize bytes
// written are handed to the syncers as one write-back range.
func TestKickWriter(t *testing.T) {
	fh, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	s := &syncer{jobs: make(chan syncJob, 10), cancel: func() {}}
	const off = 5 << 20
	kw := &kickWriter{ctx: context.Background(), s: s, fh: fh, w: io.NewOffsetWriter(fh, off), off: off}
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*kickSize/16) // ranges at ~8.6 and ~17.2 MB; the rest is left to the fsync
	for p := data; len(p) > 0; {
		n := min(len(p), 300<<10)
		if _, err := kw.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	close(s.jobs)
	var next int64 = off
	kicks := 0
	for j := range s.jobs {
		if j.final || j.off != next || j.n < kickSize || j.n >= kickSize+300<<10 {
			t.Fatalf("job %+v, want a write-back range from %d of about %d bytes", j, next, kickSize)
		}
		next += j.n
		kicks++
	}
	if kicks != 2 {
		t.Fatalf("%d write-back ranges for %d bytes, want 2", kicks, len(data))
	}
	got := make([]byte, len(data))
	if _, err := fh.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the data is not where it was written: %v", err)
	}
}

// TestPreallocate: a preallocated file has its size and reads as zeros
// until written.
func TestPreallocate(t *testing.T) {
	fh, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	const size = 3<<20 + 8192
	if err := preallocate(fh, size); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("x"), 1<<20); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fh.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size && len(b) != 1<<20+1 { // fallocate may be unsupported: then only the write counts
		t.Fatalf("size %d", len(b))
	}
	for i, c := range b {
		if (i == 1<<20) != (c != 0) {
			t.Fatalf("byte %d is %d", i, c)
		}
	}
}
