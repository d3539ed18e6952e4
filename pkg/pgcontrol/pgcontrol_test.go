package pgcontrol

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// real15 is global/pg_control as PostgreSQL 15's initdb wrote it.
func real15(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pg_control.pg15"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// torn is b with the second half of ControlFileData from another version
// of the file (as a read racing a rewrite returns it).
func torn(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := 200; i < 288; i++ {
		c[i] ^= 0x5a
	}
	return c
}

func TestCheck(t *testing.T) {
	b := real15(t)
	if len(b) != FileSize {
		t.Fatalf("testdata is %d bytes", len(b))
	}
	if v, err := Version(b); err != nil || v != 1300 {
		t.Fatalf("Version = %d, %v", v, err)
	}
	if err := Check(b); err != nil {
		t.Fatalf("PostgreSQL 15's pg_control: %v", err)
	}
	if err := Check(torn(b)); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("a torn pg_control: %v, want ErrBadCRC", err)
	}
	if err := Check(b[:100]); err == nil {
		t.Fatal("a short pg_control was accepted")
	}
	// Bytes after ControlFileData are not covered by the CRC.
	c := append([]byte(nil), b...)
	c[4000] ^= 1
	if err := Check(c); err != nil {
		t.Fatalf("a change past the CRC: %v", err)
	}
}

// TestCheckUnknownVersion: a version whose layout is not in the table is
// checked by finding its CRC.
func TestCheckUnknownVersion(t *testing.T) {
	b := make([]byte, FileSize)
	binary.LittleEndian.PutUint64(b, 7000000000000000001)
	binary.LittleEndian.PutUint32(b[8:], 1900)
	for i := 16; i < 320; i++ {
		b[i] = byte(i * 7)
	}
	binary.LittleEndian.PutUint32(b[320:], crc32.Checksum(b[:320], crc32.MakeTable(crc32.Castagnoli)))
	if err := Check(b); err != nil {
		t.Fatalf("version 1900 with its CRC at 320: %v", err)
	}
	b[100] ^= 1
	if err := Check(b); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("damaged version 1900: %v, want ErrBadCRC", err)
	}
}

// TestReadRetries: a read that returns a torn copy is repeated until the
// copy checks; one that never checks fails after the attempts with an
// error naming the file.
func TestReadRetries(t *testing.T) {
	good := real15(t)
	path := filepath.Join(t.TempDir(), "global", "pg_control")
	reads := 0
	r := Reader{Attempts: 5, Pause: time.Millisecond, ReadFile: func(name string) ([]byte, error) {
		if name != path {
			t.Fatalf("read %s, want %s", name, path)
		}
		reads++
		if reads <= 3 {
			return torn(good), nil
		}
		return good, nil
	}}
	b, err := r.Read(context.Background(), path)
	if err != nil || string(b) != string(good) || reads != 4 {
		t.Fatalf("torn three times, then whole: %d reads, %v", reads, err)
	}

	reads = 0
	r.ReadFile = func(string) ([]byte, error) { reads++; return torn(good), nil }
	_, err = r.Read(context.Background(), path)
	if !errors.Is(err, ErrBadCRC) || !strings.Contains(err.Error(), path) || reads != 5 {
		t.Fatalf("never whole: %d reads, %v", reads, err)
	}
	t.Log(err)

	// The real file, read from disk.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := (Reader{}).Read(context.Background(), path); err != nil || len(b) != FileSize {
		t.Fatalf("reading %s: %d bytes, %v", path, len(b), err)
	}
	if _, err := (Reader{}).Read(context.Background(), path+".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.Pause = time.Hour
	if _, err := r.Read(ctx, path); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
