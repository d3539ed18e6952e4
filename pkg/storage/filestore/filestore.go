package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/storage"
)

// tempPrefix marks in-flight Put files. Keys may not contain a segment with
// this prefix, so a temp file can never be mistaken for (or clobber) an object.
const tempPrefix = ".pgdr-tmp-"

// Repositories hold database contents: keep them private to the owner.
const (
	dirPerm  = 0o700
	filePerm = 0o600
)

// Store is a storage.ObjectStore rooted at a directory. It holds no mutable
// state, so it is safe for concurrent use.
type Store struct {
	root string // absolute, cleaned
}

var (
	_ storage.ObjectStore = (*Store)(nil)
	_ storage.Syncer      = (*Store)(nil)
)

// New returns a Store rooted at root. The directory need not exist yet (it is
// created by the first Put), but if root exists it must be a directory.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("filestore: empty root directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("filestore: root %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("filestore: root %s: %w", abs, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("filestore: root %s is not a directory", abs)
	}
	return &Store{root: abs}, nil
}

// Root returns the absolute root directory.
func (s *Store) Root() string { return s.root }

// String returns the repository URL, file:///path.
func (s *Store) String() string { return "file://" + filepath.ToSlash(s.root) }

func (s *Store) checkKey(key string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", fmt.Errorf("filestore %s: %w", s, err)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(seg, tempPrefix) {
			return "", fmt.Errorf("filestore %s: %w %q: segments starting with %q are reserved for temporary files",
				s, storage.ErrInvalidKey, key, tempPrefix)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put implements storage.ObjectStore.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	path, err := s.checkKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	dir := filepath.Dir(path)
	f, err := s.createTemp(dir)
	if err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // may already be closed; the error is irrelevant now
			_ = os.Remove(tmp)
		}
	}()

	src := storage.NewSizeCheckReader(storage.ContextReader(ctx, r), size)
	if _, err := io.Copy(f, src); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	// Data first, then the name: after a crash the renamed file must not be
	// a hole-filled shell of the object.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %q (%s): fsync: %w", key, path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %q (%s): close: %w", key, path, err)
	}
	// The last moment a cancelled caller can still stop the object appearing.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	// The rename is only durable once the directory entry is on disk.
	if err := fsutil.SyncDir(dir); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	return nil
}

// Sync implements storage.Syncer: it fsyncs the object's file, then every
// directory from the object's up to the root, so that an object an
// interrupted Put renamed into place (and any directory it created) is on
// disk.
func (s *Store) Sync(ctx context.Context, key string) error {
	path, err := s.checkKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync %q (%s): %w", key, path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return s.wrapErr("sync", key, path, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file: %w", storage.ErrNotFound)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %q (%s): %w", key, path, err)
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if err := fsutil.SyncDir(dir); err != nil {
			return fmt.Errorf("sync %q (%s): %w", key, path, err)
		}
		if dir == s.root || !strings.HasPrefix(dir, s.root+string(filepath.Separator)) {
			return nil
		}
	}
}

// createTemp creates the temp file in dir, creating dir first. A concurrent
// Delete may prune a directory that was just made and is still empty, so
// creation is retried a few times when the directory vanishes underneath.
// Run as root, the file and the directories created belong to the owner of
// the root (see owner).
func (s *Store) createTemp(dir string) (*os.File, error) {
	own, chown := s.owner()
	var lastErr error
	for range 10 {
		if err := s.mkdirAll(dir, own, chown); err != nil {
			return nil, err
		}
		f, err := os.CreateTemp(dir, tempPrefix+"*")
		if err == nil {
			if chown {
				if err := f.Chown(own.UID, own.GID); err != nil {
					f.Close()
					os.Remove(f.Name())
					return nil, fmt.Errorf("chown %d:%d %s: %w", own.UID, own.GID, f.Name(), err)
				}
			}
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// owner says who must own what the store creates when the process runs as
// root (euid 0): the owner of the root directory, or, while the root does
// not exist yet, of its nearest existing parent (which then owns the root
// and every directory created on the way too). Files that root alone can
// read would stop the archiver (PostgreSQL's user) for good: a first
// wal-push, a wal-repair or a daemon run as root must leave a repository
// its owner can go on using. chown is false when not running as root or
// when that owner is root.
func (s *Store) owner() (own fsutil.Owner, chown bool) {
	return fsutil.InheritOwner(s.root)
}

// mkdirAll creates dir and any missing parents, fsyncing the parent of every
// directory it creates so the new entries survive a crash; with chown, each
// directory it creates is given to own first.
func (s *Store) mkdirAll(dir string, own fsutil.Owner, chown bool) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := s.mkdirAll(parent, own, chown); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, dirPerm); err != nil {
		if errors.Is(err, fs.ErrExist) { // lost a race with another Put: fine
			return nil
		}
		return err
	}
	if chown {
		if err := own.Chown(dir); err != nil {
			return err
		}
	}
	if err := fsutil.SyncDir(parent); err != nil {
		return err
	}
	return nil
}

// Get implements storage.ObjectStore. The returned reader is the open file.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	path, err := s.checkKey(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %q (%s): %w", key, path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, s.wrapErr("get", key, path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("get %q (%s): %w", key, path, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("get %q (%s is not a regular file): %w", key, path, storage.ErrNotFound)
	}
	return f, nil
}

// Stat implements storage.ObjectStore.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	path, err := s.checkKey(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %q (%s): %w", key, path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return storage.ObjectInfo{}, s.wrapErr("stat", key, path, err)
	}
	if !fi.Mode().IsRegular() {
		return storage.ObjectInfo{}, fmt.Errorf("stat %q (%s is not a regular file): %w", key, path, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// wrapErr maps "no such file" (and ENOTDIR, when a parent is a file) to
// storage.ErrNotFound, keeping the key and path in the message.
func (s *Store) wrapErr(op, key, path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%s %q (%s): %w", op, key, path, storage.ErrNotFound)
	}
	return fmt.Errorf("%s %q (%s): %w", op, key, path, err)
}

// Delete implements storage.ObjectStore. Directories left empty are removed
// (best effort) so pruning old backups does not leave a skeleton behind.
func (s *Store) Delete(ctx context.Context, key string) error {
	path, err := s.checkKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	if fi.IsDir() {
		// Not an object (only a key prefix); refuse rather than remove a tree.
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	dir := filepath.Dir(path)
	for dir != s.root && strings.HasPrefix(dir, s.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil { // not empty (or busy): stop pruning
			break
		}
		dir = filepath.Dir(dir)
	}
	if err := fsutil.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	return nil
}

// List implements storage.ObjectStore. Objects are reported in lexical key
// order, which is not the order a plain directory walk gives: "a-b" sorts
// before "a/x" because '-' < '/'. Each directory's entries are therefore
// sorted by name, with directories compared as name+"/".
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("filestore %s: list: %w", s, err)
	}
	// Split the prefix into the directory to start in and a name prefix
	// that the entries of that directory must match; a prefix may end in
	// the middle of a name.
	dirKey, namePrefix := "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dirKey, namePrefix = prefix[:i+1], prefix[i+1:]
	}
	return s.walk(ctx, dirKey, namePrefix, fn)
}

// walk lists the directory for dirKey ("" or ending in '/'), descending into
// subdirectories, reporting entries whose names start with namePrefix.
func (s *Store) walk(ctx context.Context, dirKey, namePrefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %q: %w", dirKey+namePrefix, err)
	}
	dir := filepath.Join(s.root, filepath.FromSlash(dirKey))
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing stored under this prefix
	}
	if err != nil {
		return fmt.Errorf("list %q (%s): %w", dirKey+namePrefix, dir, err)
	}
	type entry struct {
		sortKey string
		name    string
		isDir   bool
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, namePrefix) || strings.HasPrefix(name, tempPrefix) {
			continue
		}
		if e.IsDir() {
			list = append(list, entry{name + "/", name, true})
		} else if e.Type().IsRegular() {
			list = append(list, entry{name, name, false})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, e := range list {
		key := dirKey + e.name
		if e.isDir {
			if err := s.walk(ctx, key+"/", "", fn); err != nil {
				return err
			}
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while listing
		}
		if err != nil {
			return fmt.Errorf("list: stat %q (%s): %w", key, filepath.Join(dir, e.name), err)
		}
		if err := fn(storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}
