package pgcontrol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"time"
)

// FileSize is the size of global/pg_control (PG_CONTROL_FILE_SIZE); only
// its first bytes (ControlFileData, at most MaxSafeSize) are used.
const FileSize = 8192

// MaxSafeSize bounds sizeof(ControlFileData) (PG_CONTROL_MAX_SAFE_SIZE):
// the data and its CRC fit in one disk sector.
const MaxSafeSize = 512

// versionOffset is where pg_control_version is (after the system
// identifier).
const versionOffset = 8

// crcOffsets is offsetof(ControlFileData, crc) for the pg_control
// versions whose layout is known: 1300 is PostgreSQL 13 to 16
// (src/include/catalog/pg_control.h; 288 checked against a file written
// by PostgreSQL 15's initdb). Other versions are located by search
// (crcOffset).
var crcOffsets = map[uint32]int{1300: 288}

// ErrBadCRC is the error of a control file whose CRC does not match its
// contents (torn, damaged, or not a control file).
var ErrBadCRC = errors.New("incorrect checksum in control file")

// Version returns the pg_control_version of b.
func Version(b []byte) (uint32, error) {
	if len(b) < versionOffset+4 {
		return 0, fmt.Errorf("control file of %d bytes is too short", len(b))
	}
	return binary.LittleEndian.Uint32(b[versionOffset:]), nil
}

// Check verifies b, the contents of a control file: long enough, and the
// CRC-32C of the bytes before the crc field equal to it. A version whose
// layout is not known here is accepted when some 4-byte aligned offset
// below MaxSafeSize holds the CRC of the bytes before it (a torn or
// damaged file matches by chance with a probability of about 2^-25).
func Check(b []byte) error {
	v, err := Version(b)
	if err != nil {
		return err
	}
	if off, ok := crcOffsets[v]; ok {
		if len(b) < off+4 {
			return fmt.Errorf("control file of %d bytes is too short for version %d", len(b), v)
		}
		want := binary.LittleEndian.Uint32(b[off:])
		if got := crc32.Checksum(b[:off], castagnoli()); got != want {
			return fmt.Errorf("%w (version %d: computed %08x, stored %08x)", ErrBadCRC, v, got, want)
		}
		return nil
	}
	for off := versionOffset + 8; off+4 <= min(len(b), MaxSafeSize); off += 4 {
		if crc32.Checksum(b[:off], castagnoli()) == binary.LittleEndian.Uint32(b[off:]) {
			return nil
		}
	}
	return fmt.Errorf("%w (version %d: no CRC found in the first %d bytes)", ErrBadCRC, v, MaxSafeSize)
}

func castagnoli() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// Reader reads control files of live clusters.
type Reader struct {
	// Attempts is how many times the file is read before giving up
	// (default 10, as PostgreSQL's get_controlfile).
	Attempts int
	// Pause is the wait between attempts (default 10 ms).
	Pause time.Duration
	// ReadFile reads the file (os.ReadFile when nil).
	ReadFile func(name string) ([]byte, error)
}

// Read returns the contents of the control file at path once they check
// (Check), re-reading a copy torn by a concurrent rewrite. After
// r.Attempts failed reads the error names the file and wraps the last
// failure (ErrBadCRC for a CRC that never matched).
func (r Reader) Read(ctx context.Context, path string) ([]byte, error) {
	attempts, pause, read := r.Attempts, r.Pause, r.ReadFile
	if attempts <= 0 {
		attempts = 10
	}
	if pause <= 0 {
		pause = 10 * time.Millisecond
	}
	if read == nil {
		read = os.ReadFile
	}
	var last error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("reading the control file %s: %w (last read: %v)", path, ctx.Err(), last)
			case <-t.C:
			}
		}
		b, err := read(path)
		if err != nil {
			return nil, fmt.Errorf("reading the control file %s: %w", path, err)
		}
		if last = Check(b); last == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("control file %s: %w in each of %d reads %v apart; it is damaged, or rewritten faster than it can be read", path, last, attempts, pause)
}
