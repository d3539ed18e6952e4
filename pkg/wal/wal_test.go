package wal

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	cases := []struct {
		in       string
		kind     Kind
		tli, seg uint32
		bad      bool
	}{
		{in: "000000010000000000000001", kind: KindSegment, tli: 1, seg: 1},
		{in: "0000000A00000003000000FF", kind: KindSegment, tli: 10, seg: 255},
		{in: "00000002.history", kind: KindHistory, tli: 2},
		{in: "000000010000000000000004.partial", kind: KindPartial, tli: 1, seg: 4},
		{in: "000000010000000000000002.00000028.backup", kind: KindBackupHistory, tli: 1, seg: 2},
		{in: "00000001000000000000000", bad: true},                 // 23 chars
		{in: "0000000100000000000000g1", bad: true},                // not hex
		{in: "000000010000000000000001.foo", bad: true},            // unknown suffix
		{in: "000000000000000000000001", bad: true},                // timeline 0
		{in: "0000000a0000000000000001", bad: true},                // lower case
		{in: "../00000001000000000000001", bad: true},              // path
		{in: "00000000.history", bad: true},                        // timeline 0
		{in: "000000010000000000000002.0000002.backup", bad: true}, // short offset
	}
	for _, c := range cases {
		n, err := ParseName(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParseName(%q) accepted", c.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseName(%q): %v", c.in, err)
			continue
		}
		if n.Kind != c.kind || n.Timeline != c.tli || n.Seg != c.seg {
			t.Errorf("ParseName(%q) = %+v", c.in, n)
		}
	}
}

func TestSegmentArithmetic(t *testing.T) {
	n, _ := ParseName("0000000100000000000000FF")
	if got := n.Next(DefaultSegmentSize); got != "000000010000000100000000" {
		t.Fatalf("next after FF with 16 MiB segments = %s", got)
	}
	n, _ = ParseName("00000001000000000000003F")
	if got := n.Next(64 << 20); got != "000000010000000100000000" {
		t.Fatalf("next after 3F with 64 MiB segments = %s", got)
	}
	if got := SegmentName(3, 0x1FF, DefaultSegmentSize); got != "0000000300000001000000FF" {
		t.Fatalf("SegmentName = %s", got)
	}
}

func header(sysid uint64, tli uint32, pageaddr uint64, segSize uint32) []byte {
	b := make([]byte, LongHeaderSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], 0x0002|0x0004)
	le.PutUint32(b[4:], tli)
	le.PutUint64(b[8:], pageaddr)
	le.PutUint64(b[24:], sysid)
	le.PutUint32(b[32:], segSize)
	le.PutUint32(b[36:], 8192)
	return b
}

func TestCheckSegment(t *testing.T) {
	const segSize = 1 << 20
	name, _ := ParseName("000000010000000000000003")
	data := make([]byte, segSize)
	copy(data, header(42, 1, 3*segSize, segSize))
	if _, err := CheckSegment(name, data, 42); err != nil {
		t.Fatalf("a good segment: %v", err)
	}
	if _, err := CheckSegment(name, data, 43); err == nil || !strings.Contains(err.Error(), "system identifier") {
		t.Fatalf("another cluster's segment: %v", err)
	}
	if _, err := CheckSegment(name, data[:segSize-1], 42); err == nil {
		t.Fatal("a short segment was accepted")
	}
	other, _ := ParseName("000000010000000000000004")
	if _, err := CheckSegment(other, data, 42); err == nil || !strings.Contains(err.Error(), "its name says") {
		t.Fatalf("a segment under the wrong name: %v", err)
	}
	if _, err := CheckSegment(name, make([]byte, segSize), 42); err == nil {
		t.Fatal("zeros were accepted as a segment")
	}
}

func TestSystemIdentifier(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "global"), 0o700)
	b := make([]byte, 296)
	binary.LittleEndian.PutUint64(b, 7311234567890123456)
	os.WriteFile(filepath.Join(dir, "global", "pg_control"), b, 0o600)
	id, err := SystemIdentifier(dir)
	if err != nil || id != 7311234567890123456 {
		t.Fatalf("SystemIdentifier = %d, %v", id, err)
	}
	if _, err := SystemIdentifier(t.TempDir()); err == nil {
		t.Fatal("a directory without pg_control gave no error")
	}
}

func TestLSN(t *testing.T) {
	l, err := ParseLSN("16/B374D848")
	if err != nil || uint64(l) != 0x16B374D848 || l.String() != "16/B374D848" {
		t.Fatalf("ParseLSN = %v, %v", l, err)
	}
	for _, bad := range []string{"", "16", "x/1", "1/2/3", "100000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
	segs := SegmentsBetween(1, 0x2000028, 0x4000000, DefaultSegmentSize)
	if len(segs) != 2 || segs[0] != "000000010000000000000002" || segs[1] != "000000010000000000000003" {
		t.Fatalf("SegmentsBetween = %v", segs)
	}
	segs = SegmentsBetween(2, 0x5000028, 0x5000100, DefaultSegmentSize)
	if len(segs) != 1 || segs[0] != "000000020000000000000005" {
		t.Fatalf("SegmentsBetween within one segment = %v", segs)
	}
}
