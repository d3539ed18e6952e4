package s3store_test

import (
	"io"
	"runtime"
	"testing"

	"github.com/pgdr/pgdr/pkg/testutil/s3server"
)

// zeros is an endless-looking stream of unknown length that allocates
// nothing itself.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	clear(p[:n])
	z.n -= n
	return int(n), nil
}

// TestPutMemoryBounded checks that a Put of unknown size allocates about
// PartSize*Concurrency, not the object's size: base backups are streamed
// from pg_basebackup and can be far larger than memory. It must not run in
// parallel with other tests (it reads process-wide allocation counters).
func TestPutMemoryBounded(t *testing.T) {
	srv := s3server.Start(t)
	srv.CreateBucket(t, "mem")
	opts := options(srv, "", "mem", "p")
	opts.Concurrency = 2
	s := newStore(t, opts)

	const size = 60 << 20
	bound := uint64(opts.PartSize) * uint64(opts.Concurrency)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := s.Put(t.Context(), "big", &zeros{n: size}, -1); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// Slack for the SDK's own per-request allocations.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > bound+bound/2 {
		t.Errorf("Put of %d MiB allocated %d MiB; want about PartSize*Concurrency = %d MiB",
			size>>20, alloc>>20, bound>>20)
	}
	oi, err := s.Stat(t.Context(), "big")
	if err != nil || oi.Size != size {
		t.Fatalf("Stat = %+v, %v; want %d bytes", oi, err, size)
	}
}
