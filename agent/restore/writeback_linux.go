package restore

import (
	"errors"
	"syscall"
)

// syncFileRange starts write-back of [off, off+n) of fd without waiting.
func syncFileRange(fd int, off, n int64) error {
	const syncFileRangeWrite = 0x2 // SYNC_FILE_RANGE_WRITE
	return syscall.SyncFileRange(fd, off, n, syncFileRangeWrite)
}

// fallocate allocates the first size bytes of fd (fallocate mode 0: the
// file is extended to size, the new range reads as zeros until written).
// A file system that cannot preallocate is not an error: the writes
// allocate as they go.
func fallocate(fd int, size int64) error {
	err := syscall.Fallocate(fd, 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}
