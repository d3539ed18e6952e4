package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) by Get, Stat when the object does not exist.
var ErrNotFound = errors.New("object not found")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string    // full key relative to the store's root/prefix, '/'-separated
	Size    int64     // bytes
	ModTime time.Time // last modification, as reported by the backend
}

// ObjectStore is the seam every repository backend implements. Keys are
// '/'-separated relative paths (no leading '/', no "..", no empty segments).
// Every method is safe for concurrent use.
type ObjectStore interface {
	// Put streams r to key. The object becomes visible only once it is
	// complete and durable (file: temp file, fsync, rename, fsync dir;
	// S3: multipart upload completed, then verified by size). size is the
	// expected length or -1 when unknown; a short or long stream is an error
	// and leaves no object behind. Put overwrites an existing key.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get opens key for reading. A missing key gives an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat returns the object's info; a missing key wraps ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. An error returned by fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for messages and logs (URL without secrets).
	String() string
}

// Syncer is implemented by stores where an object can be visible before it
// is durable: in a file store, a Put that renamed the object into place and
// died before the directory fsync leaves an entry a crash may still undo.
// Sync makes the object at key and its directory entries durable; a missing
// key gives an error wrapping ErrNotFound. A caller that finds an existing
// object and reports it as safely stored (wal-push's identical re-push)
// calls Sync first when the store has it. Stores whose objects are durable
// once visible (S3) do not implement it.
type Syncer interface {
	Sync(ctx context.Context, key string) error
}

// BatchDeleteError is DeleteBatch's error when the store answered key by
// key and some keys were not deleted: Failed lists them, and every other
// key of the batch was deleted. Any other error from DeleteBatch says
// nothing of which keys went.
type BatchDeleteError struct {
	Failed []string
	Err    error // the first failure
}

func (e *BatchDeleteError) Error() string { return e.Err.Error() }
func (e *BatchDeleteError) Unwrap() error { return e.Err }

// MaxBatchDelete is the most keys one DeleteBatch call takes (S3's limit).
const MaxBatchDelete = 1000

// BatchDeleter is implemented by stores that delete many objects in one
// request (S3's DeleteObjects), which large clean-ups (expiry) use instead
// of one Delete per object. DeleteBatch removes keys (at most
// MaxBatchDelete); a missing key is not an error. On an error some keys
// may have been deleted and others not.
type BatchDeleter interface {
	DeleteBatch(ctx context.Context, keys []string) error
}

// DirLister is implemented by stores that can list the key segments
// under a prefix (the file store: one directory read; S3: ListObjectsV2
// with delimiter '/'). ListDirs returns, sorted, the names of the
// directories directly under prefix (a key prefix ending in '/'), without
// reading below them: the prefixes of the keys under prefix up to their
// next '/'. A missing prefix has none.
type DirLister interface {
	ListDirs(ctx context.Context, prefix string) ([]string, error)
}

// RangeLister is implemented by stores that can list from a given key on
// (S3's StartAfter), so that a large prefix can be listed in parts at
// once. ListRange calls fn, in lexical key order, for every object whose
// key starts with prefix and lies after after (excluded; "" for no lower
// bound) and at or before upTo (included; "" for no upper bound). An
// error returned by fn stops the listing and is returned.
type RangeLister interface {
	ListRange(ctx context.Context, prefix, after, upTo string, fn func(ObjectInfo) error) error
}
