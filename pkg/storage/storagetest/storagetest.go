package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/storage"
)

// LargeSize is the size of the biggest object the suite writes. Callers
// should configure their backend's part size well below it (S3: 5 MiB) so
// that multi-part uploads are exercised.
const LargeSize = 40 << 20

// Run runs the conformance suite. newStore must return a new, empty store
// each time it is called; it is called once per subtest, from subtests that
// run in parallel, and must register its own cleanup with t.
func Run(t *testing.T, newStore func(t *testing.T) storage.ObjectStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.ObjectStore)
	}{
		{"Roundtrip", testRoundtrip},
		{"UnknownSize", testUnknownSize},
		{"SizeMismatch", testSizeMismatch},
		{"Overwrite", testOverwrite},
		{"Stat", testStat},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"Delete", testDelete},
		{"NotFound", testNotFound},
		{"InvalidKeys", testInvalidKeys},
		{"CancelPut", testCancelPut},
		{"ConcurrentPuts", testConcurrentPuts},
		{"Sync", testSync},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// data returns n deterministic, incompressible bytes (a backend that
// compresses or deduplicates must not make the large cases trivially small).
func data(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 'p', 'g', 'd', 'r'})
	_, _ = r.Read(b)
	return b
}

// hideLen hides any Len/Seek/WriterTo of the underlying reader so the backend
// sees a plain stream, as it would from a pipe.
type hideLen struct{ r io.Reader }

func (h hideLen) Read(p []byte) (int, error) { return h.r.Read(p) }

func put(t *testing.T, s storage.ObjectStore, key string, b []byte, size int64) {
	t.Helper()
	if err := s.Put(t.Context(), key, hideLen{bytes.NewReader(b)}, size); err != nil {
		t.Fatalf("%s: Put(%q, %d bytes, size %d): %v", s, key, len(b), size, err)
	}
}

func get(t *testing.T, s storage.ObjectStore, key string) []byte {
	t.Helper()
	rc, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("%s: Get(%q): %v", s, key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("%s: Get(%q): read: %v", s, key, err)
	}
	return b
}

func checkContent(t *testing.T, s storage.ObjectStore, key string, want []byte) {
	t.Helper()
	got := get(t, s, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: Get(%q) returned %d bytes, want %d bytes (content differs: %v)",
			s, key, len(got), len(want), len(got) == len(want))
	}
}

func list(t *testing.T, s storage.ObjectStore, prefix string) []storage.ObjectInfo {
	t.Helper()
	var out []storage.ObjectInfo
	if err := s.List(t.Context(), prefix, func(oi storage.ObjectInfo) error {
		out = append(out, oi)
		return nil
	}); err != nil {
		t.Fatalf("%s: List(%q): %v", s, prefix, err)
	}
	return out
}

func keys(infos []storage.ObjectInfo) []string {
	out := make([]string, len(infos))
	for i, oi := range infos {
		out[i] = oi.Key
	}
	return out
}

func checkAbsent(t *testing.T, s storage.ObjectStore, key string) {
	t.Helper()
	if oi, err := s.Stat(t.Context(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("%s: Stat(%q) = %+v, %v; want an error wrapping ErrNotFound", s, key, oi, err)
	}
	if got := keys(list(t, s, key)); len(got) != 0 {
		t.Fatalf("%s: List(%q) = %q; want nothing", s, key, got)
	}
}

func testRoundtrip(t *testing.T, s storage.ObjectStore) {
	for i, n := range []int{0, 1, 4096, LargeSize} {
		key := fmt.Sprintf("rt/known-%d", n)
		b := data(uint64(i), n)
		put(t, s, key, b, int64(n))
		checkContent(t, s, key, b)
		oi, err := s.Stat(t.Context(), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if oi.Size != int64(n) {
			t.Fatalf("Stat(%q).Size = %d, want %d", key, oi.Size, n)
		}
	}
}

func testUnknownSize(t *testing.T, s storage.ObjectStore) {
	// Sizes around 5 MiB hit part boundaries for an S3 part size of 5 MiB.
	for i, n := range []int{0, 1, 1000, 5 << 20, 5<<20 + 1, LargeSize} {
		key := fmt.Sprintf("unknown/%d", n)
		b := data(uint64(100+i), n)
		put(t, s, key, b, -1)
		checkContent(t, s, key, b)
		oi, err := s.Stat(t.Context(), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if oi.Size != int64(n) {
			t.Fatalf("Stat(%q).Size = %d, want %d", key, oi.Size, n)
		}
	}
}

func testSizeMismatch(t *testing.T, s storage.ObjectStore) {
	cases := []struct {
		name     string
		actual   int
		declared int64
	}{
		{"short-small", 50, 100},
		{"long-small", 100, 50},
		{"empty-declared-1", 0, 1},
		{"long-declared-0", 1, 0},
		{"short-large", 11 << 20, 12 << 20},
		{"long-large", 12 << 20, 11 << 20},
	}
	for i, c := range cases {
		key := "mismatch/" + c.name
		err := s.Put(t.Context(), key, hideLen{bytes.NewReader(data(uint64(200+i), c.actual))}, c.declared)
		if !errors.Is(err, storage.ErrSizeMismatch) {
			t.Fatalf("%s: Put(%q) of %d bytes declared as %d = %v; want an error wrapping ErrSizeMismatch",
				s, key, c.actual, c.declared, err)
		}
		if !strings.Contains(err.Error(), key) {
			t.Errorf("Put error %q does not name the key %q", err, key)
		}
		checkAbsent(t, s, key)
	}
	if got := keys(list(t, s, "")); len(got) != 0 {
		t.Fatalf("after failed puts List(\"\") = %q, want nothing", got)
	}

	// A failed overwrite must leave the previous object intact.
	old := data(300, 1234)
	put(t, s, "mismatch/existing", old, int64(len(old)))
	err := s.Put(t.Context(), "mismatch/existing", bytes.NewReader(data(301, 10)), 20)
	if !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("overwrite with short stream: %v, want ErrSizeMismatch", err)
	}
	checkContent(t, s, "mismatch/existing", old)
}

func testOverwrite(t *testing.T, s storage.ObjectStore) {
	key := "ow/obj"
	for i, n := range []int{3000, 10, 0, 7 << 20, 5} {
		b := data(uint64(400+i), n)
		put(t, s, key, b, int64(n))
		checkContent(t, s, key, b)
		if got := list(t, s, "ow/"); len(got) != 1 || got[0].Key != key || got[0].Size != int64(n) {
			t.Fatalf("after overwrite %d: List(\"ow/\") = %+v, want one %q of %d bytes", i, got, key, n)
		}
	}
}

func testStat(t *testing.T, s storage.ObjectStore) {
	before := time.Now()
	put(t, s, "stat/a/b", data(500, 777), 777)
	oi, err := s.Stat(t.Context(), "stat/a/b")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if oi.Key != "stat/a/b" || oi.Size != 777 {
		t.Fatalf("Stat = %+v, want key stat/a/b, size 777", oi)
	}
	// Backends report times at second (S3) or coarser granularity, and the
	// server's clock is the one that counts: allow generous slack.
	if oi.ModTime.Before(before.Add(-2*time.Minute)) || oi.ModTime.After(time.Now().Add(2*time.Minute)) {
		t.Fatalf("Stat.ModTime = %v, want close to %v", oi.ModTime, before)
	}
	l := list(t, s, "stat/")
	if len(l) != 1 || l[0].Key != oi.Key || l[0].Size != oi.Size || l[0].ModTime.IsZero() {
		t.Fatalf("List(\"stat/\") = %+v, want [%+v]", l, oi)
	}
}

func testList(t *testing.T, s storage.ObjectStore) {
	// Chosen to catch a directory walk that is not in lexical key order:
	// '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f), '0' after it.
	all := []string{
		"a-b",
		"a.txt",
		"a/b-x",
		"a/b/c",
		"a/b/d/e",
		"a/b0",
		"a/bc",
		"a0",
		"b",
		"backups/20240101T000000Z/base.tar.zst",
		"backups/20240101T000000Z/manifest.json",
		"backups/20240102T000000Z/base.tar.zst",
		"wal/00000001/000000010000000000000001",
		"wal/00000001/000000010000000000000002",
		"wal/00000001/00000001000000000000001F",
		"wal/00000001/000000010000000100000000",
		"wal/00000002.history",
		"wal/00000002/000000020000000100000001",
	}
	sizes := map[string]int64{}
	// Write in a scrambled order: the listing order must not depend on it.
	order := slices.Clone(all)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for i, k := range order {
		sizes[k] = int64(i + 1)
		put(t, s, k, data(uint64(600+i), i+1), int64(i+1))
	}

	filter := func(prefix string) []string {
		var out []string
		for _, k := range all {
			if strings.HasPrefix(k, prefix) {
				out = append(out, k)
			}
		}
		return out
	}
	for _, prefix := range []string{
		"", "a", "a/", "a/b", "a/b/", "a/b/c", "a/b/d", "a.", "b", "backups/", "backups/20240101T000000Z/",
		"wal/", "wal/0000000", "wal/00000001/", "wal/00000001/0000000100000000000000",
		"wal/00000001/00000001000000000000001", "wal/00000002", "zzz", "a/nothing/", "nothing/at/all",
	} {
		got := list(t, s, prefix)
		want := filter(prefix)
		if !slices.Equal(keys(got), want) {
			t.Errorf("%s: List(%q) = %q\nwant %q", s, prefix, keys(got), want)
			continue
		}
		for _, oi := range got {
			if oi.Size != sizes[oi.Key] {
				t.Errorf("List(%q): %q has size %d, want %d", prefix, oi.Key, oi.Size, sizes[oi.Key])
			}
		}
	}

	// An error from fn stops the listing and is returned as is (wrapped or not).
	stop := errors.New("stop here")
	var n int
	err := s.List(t.Context(), "", func(storage.ObjectInfo) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("List with failing fn: err %v after %d calls; want %v after 3", err, n, stop)
	}

	for _, bad := range []string{"/a", "..", "a/../b", "a//", "./", `a\b`} {
		err := s.List(t.Context(), bad, func(storage.ObjectInfo) error { return nil })
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want an error wrapping ErrInvalidKey", bad, err)
		}
	}
}

func testListEmpty(t *testing.T, s storage.ObjectStore) {
	for _, p := range []string{"", "a", "a/"} {
		if got := list(t, s, p); len(got) != 0 {
			t.Fatalf("List(%q) on an empty store = %+v", p, got)
		}
	}
}

func testDelete(t *testing.T, s storage.ObjectStore) {
	put(t, s, "del/x/one", []byte("one"), 3)
	put(t, s, "del/x/two", []byte("two"), 3)
	for range 2 { // the second Delete of the same key must succeed too
		if err := s.Delete(t.Context(), "del/x/one"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		checkAbsent(t, s, "del/x/one")
	}
	checkContent(t, s, "del/x/two", []byte("two"))
	for _, k := range []string{"never/existed", "del/x/two/below-an-object", "del/x"} {
		if err := s.Delete(t.Context(), k); err != nil {
			t.Fatalf("Delete(%q) of a missing key: %v", k, err)
		}
	}
	checkContent(t, s, "del/x/two", []byte("two"))
	if err := s.Delete(t.Context(), "del/x/two"); err != nil {
		t.Fatal(err)
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Fatalf("after deleting everything List = %+v", got)
	}
	// The key space is usable again after deletes pruned it.
	put(t, s, "del/x/one", []byte("again"), 5)
	checkContent(t, s, "del/x/one", []byte("again"))
}

func testNotFound(t *testing.T, s storage.ObjectStore) {
	put(t, s, "nf/dir/obj", []byte("x"), 1)
	for _, k := range []string{"missing", "no/such/dir/key", "nf/dir", "nf/dir/obj/below", "nf/dir/ob"} {
		rc, err := s.Get(t.Context(), k)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: Get(%q) = %v; want an error wrapping ErrNotFound", s, k, err)
		} else if !strings.Contains(err.Error(), k) {
			t.Errorf("Get(%q) error %q does not name the key", k, err)
		}
		if _, err := s.Stat(t.Context(), k); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: Stat(%q) = %v; want an error wrapping ErrNotFound", s, k, err)
		} else if !strings.Contains(err.Error(), k) {
			t.Errorf("Stat(%q) error %q does not name the key", k, err)
		}
	}
}

// testSync checks storage.Syncer, for the stores that implement it: an
// existing object syncs, and a missing key, a key prefix or an invalid key
// is an error naming it (never a silent success a caller would take as
// "durable").
func testSync(t *testing.T, s storage.ObjectStore) {
	sy, ok := s.(storage.Syncer)
	if !ok {
		t.Skipf("%s does not implement storage.Syncer (its objects are durable once visible)", s)
	}
	put(t, s, "sync/dir/obj", []byte("durable"), 7)
	if err := sy.Sync(t.Context(), "sync/dir/obj"); err != nil {
		t.Fatalf("%s: Sync of an existing object: %v", s, err)
	}
	if b := get(t, s, "sync/dir/obj"); string(b) != "durable" {
		t.Fatalf("Sync changed the object: %q", b)
	}
	for _, k := range []string{"sync/dir/missing", "sync/no/such/dir", "sync/dir"} {
		if err := sy.Sync(t.Context(), k); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: Sync(%q) = %v; want an error wrapping ErrNotFound", s, k, err)
		} else if !strings.Contains(err.Error(), k) {
			t.Errorf("Sync(%q) error %q does not name the key", k, err)
		}
	}
	if err := sy.Sync(t.Context(), "a/../b"); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("%s: Sync of an invalid key = %v; want an error wrapping ErrInvalidKey", s, err)
	}
}

func testInvalidKeys(t *testing.T, s storage.ObjectStore) {
	for _, k := range []string{
		"", "/abs", "/", "..", ".", "a/..", "../a", "a/../b", "a/./b", "a//b", "a/", `a\b`, `\a`, "a\x00b",
	} {
		ctx := t.Context()
		if err := s.Put(ctx, k, strings.NewReader("x"), 1); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v; want an error wrapping ErrInvalidKey", k, err)
		}
		if rc, err := s.Get(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Get(%q) = %v; want an error wrapping ErrInvalidKey", k, err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v; want an error wrapping ErrInvalidKey", k, err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v; want an error wrapping ErrInvalidKey", k, err)
		}
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Fatalf("invalid puts left objects: %+v", got)
	}
}

// cancelReader serves data and cancels the context once it has served
// cancelAt bytes, then keeps serving: like a producer that does not know
// the consumer gave up.
type cancelReader struct {
	data     []byte
	off      int
	cancelAt int
	cancel   context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.off >= c.cancelAt {
		c.cancel()
	}
	if c.off >= len(c.data) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 64<<10)], c.data[c.off:])
	c.off += n
	return n, nil
}

func testCancelPut(t *testing.T, s storage.ObjectStore) {
	b := data(700, 20<<20)
	for _, c := range []struct {
		name     string
		cancelAt int
		size     int64
	}{
		{"before-start", 0, int64(len(b))},
		{"small-unknown", 1000, -1},
		{"mid-large-unknown", 12 << 20, -1},
		{"mid-large-known", 12 << 20, int64(len(b))},
	} {
		key := "cancel/" + c.name
		ctx, cancel := context.WithCancel(t.Context())
		if c.cancelAt == 0 {
			cancel()
		}
		r := &cancelReader{data: b, cancelAt: c.cancelAt, cancel: cancel}
		start := time.Now()
		err := s.Put(ctx, key, r, c.size)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: cancelled Put(%q) = %v; want an error wrapping context.Canceled", s, key, err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("cancelled Put(%q) took %v to return", key, d)
		}
		checkAbsent(t, s, key)
	}
}

func testConcurrentPuts(t *testing.T, s storage.ObjectStore) {
	const n = 16
	want := map[string][]byte{}
	for i := range n {
		size := 100<<10 + i
		if i%8 == 0 {
			size = 6<<20 + i // some multi-part uploads in the mix
		}
		// Several goroutines create the same new directories at once.
		want[fmt.Sprintf("conc/%d/obj-%02d", i%3, i)] = data(uint64(800+i), size)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for k, b := range want {
		wg.Go(func() {
			size := int64(len(b))
			if len(k)%2 == 0 {
				size = -1
			}
			if err := s.Put(t.Context(), k, hideLen{bytes.NewReader(b)}, size); err != nil {
				errs <- fmt.Errorf("Put(%q): %w", k, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	got := list(t, s, "conc/")
	if len(got) != n {
		t.Fatalf("List(\"conc/\") found %d objects, want %d: %q", len(got), n, keys(got))
	}
	for _, oi := range got {
		if oi.Size != int64(len(want[oi.Key])) {
			t.Errorf("%q: listed size %d, want %d", oi.Key, oi.Size, len(want[oi.Key]))
		}
		checkContent(t, s, oi.Key, want[oi.Key])
	}
}
