//go:build !linux

package restore

// syncFileRange is a no-op where sync_file_range does not exist: the fsync
// that follows does all the work.
func syncFileRange(fd int, off, n int64) error { return nil }

// fallocate is a no-op where fallocate does not exist: the writes allocate
// as they go.
func fallocate(fd int, size int64) error { return nil }
