package fsutil

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// SyncDir fsyncs the directory dir, making the entries created, removed or
// renamed in it durable. A file system that cannot fsync a directory
// (EINVAL, ENOTSUP) has nothing more durable to offer: that is not an
// error. The error names dir.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return fmt.Errorf("fsync directory %s: %w", dir, err)
}

// WriteFileSynced writes b to path (created with mode perm, or truncated)
// and fsyncs it before closing. It does not sync the directory: callers
// creating a new entry call SyncDir once they have written them all.
func WriteFileSynced(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}
