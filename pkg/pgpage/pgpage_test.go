package pgpage

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// refChecksum is a literal transcription of pg_checksum_page: sums updated
// row by row, pd_checksum zeroed in a copy. Checksum must agree with it.
func refChecksum(page []byte, blkno uint32) uint16 {
	cp := append([]byte(nil), page...)
	cp[8], cp[9] = 0, 0
	var sums [nSums]uint32
	copy(sums[:], checksumBaseOffsets[:])
	comp := func(s, v uint32) uint32 {
		t := s ^ v
		return t*fnvPrime ^ t>>17
	}
	for i := 0; i < BlockSize/(4*nSums); i++ {
		for j := 0; j < nSums; j++ {
			sums[j] = comp(sums[j], binary.LittleEndian.Uint32(cp[(i*nSums+j)*4:]))
		}
	}
	for i := 0; i < 2; i++ {
		for j := 0; j < nSums; j++ {
			sums[j] = comp(sums[j], 0)
		}
	}
	var x uint32
	for _, s := range sums {
		x ^= s
	}
	x ^= blkno
	return uint16(x%65535 + 1)
}

// randomPage returns an initialized-looking page with random contents and a
// valid checksum for blkno.
func randomPage(r *rand.Rand, blkno uint32) []byte {
	p := make([]byte, BlockSize)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	binary.LittleEndian.PutUint16(p[14:], 0x1000) // pd_upper != 0: not new
	binary.LittleEndian.PutUint16(p[8:], Checksum(p, blkno))
	return p
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	blknos := []uint32{0, 1, 2, 65534, 65535, 65536, RelSegSize, RelSegSize + 7, 1<<32 - 2, 1<<32 - 1}
	for i := 0; i < 200; i++ {
		p := make([]byte, BlockSize)
		switch i % 4 {
		case 0: // random
			for j := range p {
				p[j] = byte(r.Uint32())
			}
		case 1: // all 0xFF
			for j := range p {
				p[j] = 0xFF
			}
		case 2: // sparse
			for k := 0; k < 10; k++ {
				p[r.IntN(BlockSize)] = byte(r.Uint32())
			}
		case 3: // zeros
		}
		for _, b := range append(blknos, r.Uint32()) {
			if got, want := Checksum(p, b), refChecksum(p, b); got != want {
				t.Fatalf("page %d blkno %d: Checksum %04X, reference %04X", i, b, got, want)
			}
		}
	}
}

func TestChecksumIgnoresStoredChecksumAndKeepsPage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := randomPage(r, 9)
	orig := append([]byte(nil), p...)
	c := Checksum(p, 9)
	p[8], p[9] = ^p[8], ^p[9]
	if Checksum(p, 9) != c {
		t.Fatal("checksum depends on pd_checksum")
	}
	p[8], p[9] = orig[8], orig[9]
	if string(p) != string(orig) {
		t.Fatal("Checksum modified the page")
	}
	// pd_flags shares a uint32 with pd_checksum but is covered.
	p[10] ^= 1
	if Checksum(p, 9) == c {
		t.Fatal("checksum ignores pd_flags")
	}
}

// TestChecksumNeverZero checks the +1 offset of the final reduction: 0 is
// never a computed checksum.
func TestChecksumNeverZero(t *testing.T) {
	p := make([]byte, BlockSize)
	for b := uint32(0); b < 70000; b++ {
		if Checksum(p, b) == 0 {
			t.Fatalf("checksum 0 at blkno %d", b)
		}
	}
}

func TestChecksumPanicsOnShortPage(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	Checksum(make([]byte, BlockSize-1), 0)
}

func TestVerify(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	p := randomPage(r, 42)
	if err := Verify(p, 42); err != nil {
		t.Fatal(err)
	}
	if err := Verify(p, 43); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong blkno: %v", err)
	}
	for _, off := range []int{0, 7, 10, 23, 24, 4000, BlockSize - 1} {
		q := append([]byte(nil), p...)
		q[off] ^= 0x10
		if err := Verify(q, 42); !errors.Is(err, ErrChecksum) {
			t.Fatalf("flipped byte %d: %v", off, err)
		}
	}
	zero := make([]byte, BlockSize)
	if err := Verify(zero, 7); err != nil {
		t.Fatalf("zero page: %v", err)
	}
	zero[5000] = 1 // pd_upper still 0
	if err := Verify(zero, 7); !errors.Is(err, ErrNewNotZero) {
		t.Fatalf("new page with data: %v", err)
	}
	if err := Verify(p[:100], 42); !errors.Is(err, ErrPageSize) {
		t.Fatalf("short page: %v", err)
	}
}

func TestParseHeader(t *testing.T) {
	p := make([]byte, BlockSize)
	le := binary.LittleEndian
	le.PutUint32(p[0:], 0x1)        // xlogid
	le.PutUint32(p[4:], 0x2345ABCD) // xrecoff
	le.PutUint16(p[8:], 0xBEEF)
	le.PutUint16(p[10:], 0x0004)
	le.PutUint16(p[12:], 40)
	le.PutUint16(p[14:], 8000)
	le.PutUint16(p[16:], 8176)
	le.PutUint16(p[18:], 8192|4)
	le.PutUint32(p[20:], 777)
	h := ParseHeader(p)
	want := Header{LSN: 0x1_2345ABCD, Checksum: 0xBEEF, Flags: 4, Lower: 40, Upper: 8000, Special: 8176, PageSizeVersion: 8196, PruneXID: 777}
	if h != want {
		t.Fatalf("ParseHeader = %+v, want %+v", h, want)
	}
	if h.PageSize() != 8192 || h.Version() != 4 {
		t.Fatalf("PageSize %d Version %d", h.PageSize(), h.Version())
	}
	if IsNew(p) {
		t.Fatal("IsNew with pd_upper 8000")
	}
	le.PutUint16(p[14:], 0)
	if !IsNew(p) || ParseHeader(p).Upper != 0 {
		t.Fatal("not IsNew with pd_upper 0")
	}
	le.PutUint16(p[14:], 0x0100) // high byte only
	if IsNew(p) {
		t.Fatal("IsNew with pd_upper 256")
	}
}

func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 200, BlockSize} {
		p := make([]byte, n)
		if !IsZero(p) {
			t.Fatalf("len %d zero: false", n)
		}
		for i := 0; i < n; i++ {
			p[i] = 0x80
			if IsZero(p) {
				t.Fatalf("len %d byte %d set: true", n, i)
			}
			p[i] = 0
		}
	}
}

func TestParseRelPath(t *testing.T) {
	cases := []struct {
		in   string
		want RelFile
		ok   bool
	}{
		{"base/5/16384", RelFile{"base", 5, 16384, "main", 0}, true},
		{"base/5/16384.1", RelFile{"base", 5, 16384, "main", 1}, true},
		{"base/5/16384.2", RelFile{"base", 5, 16384, "main", 2}, true},
		{"base/5/16384_fsm", RelFile{"base", 5, 16384, "fsm", 0}, true},
		{"base/5/16384_vm", RelFile{"base", 5, 16384, "vm", 0}, true},
		{"base/5/16384_init", RelFile{"base", 5, 16384, "init", 0}, true},
		{"base/5/16384_fsm.3", RelFile{"base", 5, 16384, "fsm", 3}, true},
		{"base/1/1259", RelFile{"base", 1, 1259, "main", 0}, true},
		{"global/1262", RelFile{"global", 0, 1262, "main", 0}, true},
		{"global/1262_vm", RelFile{"global", 0, 1262, "vm", 0}, true},
		{"global/1262.1", RelFile{"global", 0, 1262, "main", 1}, true},
		{"pg_tblspc/16390/PG_15_202209061/5/16391", RelFile{"16390", 5, 16391, "main", 0}, true},
		{"pg_tblspc/16390/PG_15_202209061/5/16391_fsm.12", RelFile{"16390", 5, 16391, "fsm", 12}, true},
		{"base/4294967295/4294967295.4", RelFile{"base", 4294967295, 4294967295, "main", 4}, true},

		{"base/5/t3_16384", RelFile{}, false},     // temporary relation
		{"base/5/t3_16384_fsm", RelFile{}, false}, // temporary relation fork
		{"base/5/t3_16384.1", RelFile{}, false},
		{"pg_tblspc/16390/PG_15_202209061/5/t12_16400", RelFile{}, false},
		{"base/5/pg_filenode.map", RelFile{}, false},
		{"global/pg_filenode.map", RelFile{}, false},
		{"global/pg_control", RelFile{}, false},
		{"global/pg_internal.init", RelFile{}, false},
		{"base/5/pg_internal.init", RelFile{}, false},
		{"base/5/PG_VERSION", RelFile{}, false},
		{"PG_VERSION", RelFile{}, false},
		{"pg_wal/000000010000000000000001", RelFile{}, false},
		{"pg_xact/0000", RelFile{}, false},
		{"base/5", RelFile{}, false},
		{"base/5/", RelFile{}, false},
		{"base/x/16384", RelFile{}, false},
		{"base/0/16384", RelFile{}, false},
		{"base/5/0", RelFile{}, false},
		{"base/5/16384.0", RelFile{}, false},   // segment 0 has no suffix
		{"base/5/16384.", RelFile{}, false},    // empty segment
		{"base/5/16384.1.2", RelFile{}, false}, //
		{"base/5/16384_foo", RelFile{}, false}, // unknown fork
		{"base/5/16384_main", RelFile{}, false},
		{"base/5/16384.1_fsm", RelFile{}, false}, // fork after segment
		{"base/5/+16384", RelFile{}, false},
		{"base/5/4294967296", RelFile{}, false}, // > uint32
		{"base/5/16384/1", RelFile{}, false},
		{"global/5/16384", RelFile{}, false},
		{"pg_tblspc/16390/5/16391", RelFile{}, false},               // no version dir
		{"pg_tblspc/16390/PG_15_202209061/16391", RelFile{}, false}, // no db dir
		{"pg_tblspc/x/PG_15_202209061/5/16391", RelFile{}, false},
		{"pg_tblspc/16390/PG_15_202209061/5/PG_VERSION", RelFile{}, false},
		{"./base/5/16384", RelFile{}, false},
		{"/base/5/16384", RelFile{}, false},
	}
	for _, c := range cases {
		got, ok := ParseRelPath(c.in)
		if ok != c.ok || got != c.want {
			t.Errorf("ParseRelPath(%q) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestBlockNumber(t *testing.T) {
	r, _ := ParseRelPath("base/5/16384.2")
	if got := r.BlockNumber(3); got != 2*131072+3 {
		t.Fatalf("BlockNumber = %d", got)
	}
	r, _ = ParseRelPath("base/5/16384")
	if got := r.BlockNumber(RelSegSize - 1); got != 131071 {
		t.Fatalf("BlockNumber = %d", got)
	}
	// A 1 GiB segment holds exactly RelSegSize pages.
	if RelSegSize*BlockSize != 1<<30 {
		t.Fatal("RelSegSize*BlockSize != 1 GiB")
	}
	// The last segment of a maximal fork (MaxBlockNumber = 2^32-2).
	r, _ = ParseRelPath("base/5/16384.32767")
	if got := r.BlockNumber(RelSegSize - 2); got != 1<<32-2 {
		t.Fatalf("BlockNumber = %d", got)
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint32(0))
	f.Fuzz(func(t *testing.T, seed []byte, blkno uint32) {
		p := make([]byte, BlockSize)
		for i := range p {
			if len(seed) > 0 {
				p[i] = seed[i%len(seed)] + byte(i/len(seed))
			}
		}
		if got, want := Checksum(p, blkno), refChecksum(p, blkno); got != want {
			t.Fatalf("Checksum %04X, reference %04X", got, want)
		}
	})
}

func FuzzParseRelPath(f *testing.F) {
	for _, s := range []string{"base/5/16384_fsm.1", "global/1262", "pg_tblspc/1/PG_15_1/5/7_vm.2", "base/5/t1_2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := ParseRelPath(s)
		if !ok {
			return
		}
		if r.RelFileNode == 0 || (r.Tablespace != "global" && r.DB == 0) {
			t.Fatalf("ParseRelPath(%q) = %+v", s, r)
		}
	})
}

var sink uint16

func BenchmarkChecksum(b *testing.B) {
	p := randomPage(rand.New(rand.NewPCG(7, 8)), 1)
	b.SetBytes(BlockSize)
	for i := 0; b.Loop(); i++ {
		sink ^= Checksum(p, uint32(i))
	}
}

// BenchmarkVerifyFile checksums 16 MiB of distinct pages, so the data comes
// from memory rather than L1 cache as in a real backup.
func BenchmarkVerifyFile(b *testing.B) {
	const n = 2048
	r := rand.New(rand.NewPCG(9, 10))
	buf := make([]byte, 0, n*BlockSize)
	for i := uint32(0); i < n; i++ {
		buf = append(buf, randomPage(r, i)...)
	}
	b.SetBytes(n * BlockSize)
	for b.Loop() {
		for i := uint32(0); i < n; i++ {
			if err := Verify(buf[i*BlockSize:(i+1)*BlockSize], i); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkIsZero(b *testing.B) {
	p := make([]byte, BlockSize)
	b.SetBytes(BlockSize)
	var z bool
	for b.Loop() {
		z = IsZero(p)
	}
	if !z {
		b.Fatal("not zero")
	}
}
