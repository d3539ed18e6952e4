package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// Owner is a file's owning user and group.
type Owner struct{ UID, GID int }

// OwnerOf returns who owns path (following a symbolic link).
func OwnerOf(path string) (Owner, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Owner{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Owner{}, fmt.Errorf("%s: no owner information", path)
	}
	return Owner{UID: int(st.Uid), GID: int(st.Gid)}, nil
}

// InheritOwner, when the process runs as root, returns the owner of the
// nearest existing one of path and its parents: what root creates under
// path must belong to them (a repository or data directory that PostgreSQL,
// not root, reads and writes). ok is false when not running as root, or
// when that owner is root itself (nothing to change).
func InheritOwner(path string) (o Owner, ok bool) {
	if os.Geteuid() != 0 {
		return Owner{}, false
	}
	for p := path; ; {
		o, err := OwnerOf(p)
		if err == nil {
			return o, o.UID != 0 || o.GID != 0
		}
		parent := filepath.Dir(p)
		if parent == p {
			return Owner{}, false
		}
		p = parent
	}
}

// Chown gives path to o (not following a symbolic link); the error names
// path.
func (o Owner) Chown(path string) error {
	if err := os.Lchown(path, o.UID, o.GID); err != nil {
		return fmt.Errorf("chown %d:%d %s: %w", o.UID, o.GID, path, err)
	}
	return nil
}
