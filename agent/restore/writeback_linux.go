package restore

import "syscall"

// syncFileRange starts write-back of [off, off+n) of fd without waiting.
func syncFileRange(fd int, off, n int64) error {
	const syncFileRangeWrite = 0x2 // SYNC_FILE_RANGE_WRITE
	return syscall.SyncFileRange(fd, off, n, syncFileRangeWrite)
}
