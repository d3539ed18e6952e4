package filestore

import (
	"context"
	"crypto/rand"
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

// ErrSymlink means a symbolic link was found below the root: the store
// never follows one (nor reports it as an object). Whoever can write the
// repository could otherwise point a key's directory, or a key itself, at
// any file of the host (docs/security.md: the repository is untrusted).
var ErrSymlink = errors.New("symbolic link in the repository: not followed")

// openRoot opens the root directory as an os.Root: every operation below it
// goes through it, so no path, however its components are swapped
// concurrently, resolves outside the root; noLinks on top of that refuses
// links that stay inside it.
func (s *Store) openRoot() (*os.Root, error) {
	return os.OpenRoot(s.root)
}

// noLinks fails with ErrSymlink, naming the path, when a component of rel
// (relative to the root, which itself may be a link: the operator chose it)
// is a symbolic link. A missing component ends the check: nothing below it
// exists.
func (s *Store) noLinks(root *os.Root, rel string) error {
	if rel == "" || rel == "." {
		return nil
	}
	parts := strings.Split(rel, string(filepath.Separator))
	for i := range parts {
		p := filepath.Join(parts[:i+1]...)
		fi, err := root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s: %w", filepath.Join(s.root, p), ErrSymlink)
		}
	}
	return nil
}

// syncDirIn fsyncs directory dir below root (see fsutil.SyncDir).
func syncDirIn(root *os.Root, dir string) error {
	d, err := root.Open(dir)
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

// Put implements storage.ObjectStore.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	path, err := s.checkKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	own, chown := s.owner()
	// The root itself (and its parents) is the operator's choice: plain
	// paths. Everything below it goes through the os.Root.
	if err := s.mkdirAll(s.root, own, chown); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	root, err := s.openRoot()
	if err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	defer root.Close()
	rel := filepath.FromSlash(key)
	if err := s.noLinks(root, rel); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	dir := filepath.Dir(rel)
	f, tmp, err := s.createTemp(root, dir, own, chown)
	if err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close() // may already be closed; the error is irrelevant now
			_ = root.Remove(tmp)
		}
	}()

	src := storage.NewSizeCheckReader(storage.ContextReader(ctx, r), size)
	// Large writes: os.File's ReadFrom would copy from this reader in
	// 32 KiB pieces, one write(2) each (over 200 for a WAL segment's
	// object); hidden behind a plain io.Writer, CopyBuffer uses buf.
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, src, make([]byte, putBufSize(size))); err != nil {
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
	// A link planted at the key since the check is replaced, not followed.
	if err := root.Rename(tmp, rel); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	// The rename is only durable once the directory entry is on disk.
	if err := syncDirIn(root, dir); err != nil {
		return fmt.Errorf("put %q (%s): %w", key, path, err)
	}
	return nil
}

// putBufSize is Put's copy buffer for an object of size bytes (-1:
// unknown): 1 MiB, or enough for the whole object and the one byte past it
// that proves it is not longer.
func putBufSize(size int64) int {
	const limit = 1 << 20
	if size >= 0 && size < limit {
		return int(size) + 1
	}
	return limit
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
	root, err := s.openRoot()
	if err != nil {
		return s.wrapErr("sync", key, path, err)
	}
	defer root.Close()
	rel := filepath.FromSlash(key)
	if err := s.noLinks(root, rel); err != nil {
		return fmt.Errorf("sync %q (%s): %w", key, path, err)
	}
	f, err := root.Open(rel)
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
	for dir := filepath.Dir(rel); ; dir = filepath.Dir(dir) {
		if err := syncDirIn(root, dir); err != nil {
			return fmt.Errorf("sync %q (%s): %w", key, path, err)
		}
		if dir == "." {
			break
		}
	}
	// The root's own entry in its parent.
	if err := fsutil.SyncDir(filepath.Dir(s.root)); err != nil {
		return fmt.Errorf("sync %q (%s): %w", key, path, err)
	}
	return nil
}

// createTemp creates a temp file in dir (relative to root), creating dir
// first. A concurrent Delete may prune a directory that was just made and
// is still empty, so creation is retried a few times when the directory
// vanishes underneath. Run as root, the file and the directories created
// belong to the owner of the root (see owner). It returns the file and its
// path relative to root.
func (s *Store) createTemp(root *os.Root, dir string, own fsutil.Owner, chown bool) (*os.File, string, error) {
	var lastErr error
	for range 10 {
		if err := s.mkdirIn(root, dir, own, chown); err != nil {
			return nil, "", err
		}
		name := filepath.Join(dir, tempPrefix+rand.Text())
		f, err := root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
		if err == nil {
			if chown {
				if err := f.Chown(own.UID, own.GID); err != nil {
					f.Close()
					_ = root.Remove(name)
					return nil, "", fmt.Errorf("chown %d:%d %s: %w", own.UID, own.GID, filepath.Join(s.root, name), err)
				}
			}
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, "", err
		}
		lastErr = err
	}
	return nil, "", lastErr
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

// mkdirAll creates dir (the root: a plain path) and any missing parents,
// fsyncing the parent of every directory it creates so the new entries
// survive a crash; with chown, each directory it creates is given to own
// first.
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

// mkdirIn is mkdirAll below root, for dir relative to it; a component
// that is a symbolic link is an ErrSymlink.
func (s *Store) mkdirIn(root *os.Root, dir string, own fsutil.Owner, chown bool) error {
	if dir == "." || dir == "" {
		return nil
	}
	fi, err := root.Lstat(dir)
	if err == nil {
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s: %w", filepath.Join(s.root, dir), ErrSymlink)
		case !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory", filepath.Join(s.root, dir))
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirIn(root, parent, own, chown); err != nil {
		return err
	}
	if err := root.Mkdir(dir, dirPerm); err != nil {
		if errors.Is(err, fs.ErrExist) { // lost a race with another Put: fine
			return nil
		}
		return err
	}
	if chown {
		if err := root.Lchown(dir, own.UID, own.GID); err != nil {
			return fmt.Errorf("chown %d:%d %s: %w", own.UID, own.GID, filepath.Join(s.root, dir), err)
		}
	}
	return syncDirIn(root, parent)
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
	root, err := s.openRoot()
	if err != nil {
		return nil, s.wrapErr("get", key, path, err)
	}
	defer root.Close()
	rel := filepath.FromSlash(key)
	if err := s.noLinks(root, rel); err != nil {
		return nil, fmt.Errorf("get %q (%s): %w", key, path, err)
	}
	f, err := root.Open(rel)
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
	root, err := s.openRoot()
	if err != nil {
		return storage.ObjectInfo{}, s.wrapErr("stat", key, path, err)
	}
	defer root.Close()
	rel := filepath.FromSlash(key)
	if err := s.noLinks(root, rel); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %q (%s): %w", key, path, err)
	}
	fi, err := root.Lstat(rel)
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
// (best effort) so pruning old backups does not leave a skeleton behind. A
// key through or at a symbolic link is an ErrSymlink: nothing is removed.
func (s *Store) Delete(ctx context.Context, key string) error {
	path, err := s.checkKey(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	root, err := s.openRoot()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	defer root.Close()
	rel := filepath.FromSlash(key)
	if err := s.noLinks(root, rel); err != nil {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	fi, err := root.Lstat(rel)
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
	if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %q (%s): %w", key, path, err)
	}
	dir := filepath.Dir(rel)
	for dir != "." {
		if root.Remove(dir) != nil { // not empty (or busy): stop pruning
			break
		}
		dir = filepath.Dir(dir)
	}
	if err := syncDirIn(root, dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
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

// ListDirs implements storage.DirLister: one directory read. A symbolic
// link on the way or among the entries stops it with an ErrSymlink.
func (s *Store) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	if err := storage.ValidatePrefix(prefix); err != nil || !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("filestore %s: list directories of %q: not a prefix ending in '/' (%v)", s, prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root, err := s.openRoot()
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list directories of %q (%s): %w", prefix, s.root, err)
	}
	defer root.Close()
	rel := filepath.FromSlash(strings.TrimSuffix(prefix, "/"))
	if err := s.noLinks(root, rel); err != nil {
		return nil, fmt.Errorf("list directories of %q: %w", prefix, err)
	}
	d, err := root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list directories of %q (%s): %w", prefix, s.root, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if errors.Is(err, fs.ErrNotExist) { // pruned by a concurrent Delete
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list directories of %q (%s): %w", prefix, filepath.Join(s.root, rel), err)
	}
	var out []string
	for _, e := range entries {
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("list directories of %q: %s: %w", prefix, filepath.Join(s.root, rel, e.Name()), ErrSymlink)
		case e.IsDir() && !strings.HasPrefix(e.Name(), tempPrefix):
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// walk lists the directory for dirKey ("" or ending in '/'), descending into
// subdirectories, reporting entries whose names start with namePrefix. A
// symbolic link, as the directory listed, on its way or among the entries,
// stops the listing with an ErrSymlink naming it: nothing is read through
// it, and a caller deleting what it lists (expiry) stops rather than acting
// on a partial view.
func (s *Store) walk(ctx context.Context, dirKey, namePrefix string, fn func(storage.ObjectInfo) error) error {
	root, err := s.openRoot()
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing stored yet
	}
	if err != nil {
		return fmt.Errorf("list %q (%s): %w", dirKey+namePrefix, s.root, err)
	}
	defer root.Close()
	if err := s.noLinks(root, filepath.FromSlash(strings.TrimSuffix(dirKey, "/"))); err != nil {
		return fmt.Errorf("list %q: %w", dirKey+namePrefix, err)
	}
	return s.walkIn(ctx, root, dirKey, namePrefix, fn)
}

func (s *Store) walkIn(ctx context.Context, root *os.Root, dirKey, namePrefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %q: %w", dirKey+namePrefix, err)
	}
	rel := filepath.FromSlash(strings.TrimSuffix(dirKey, "/"))
	if rel == "" {
		rel = "."
	}
	dir := filepath.Join(s.root, rel)
	d, err := root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing stored under this prefix
	}
	if err != nil {
		return fmt.Errorf("list %q (%s): %w", dirKey+namePrefix, dir, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	// A directory emptied and pruned by a concurrent Delete between the
	// open and the read (readdirent: ENOENT) holds nothing.
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrNotExist) {
		return nil
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
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("list %q: %s: %w", dirKey+namePrefix, filepath.Join(dir, name), ErrSymlink)
		case e.IsDir():
			list = append(list, entry{name + "/", name, true})
		case e.Type().IsRegular():
			list = append(list, entry{name, name, false})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, e := range list {
		key := dirKey + e.name
		if e.isDir {
			if err := s.walkIn(ctx, root, key+"/", "", fn); err != nil {
				return err
			}
			continue
		}
		fi, err := root.Lstat(filepath.Join(rel, e.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while listing
		}
		if err != nil {
			return fmt.Errorf("list: stat %q (%s): %w", key, filepath.Join(dir, e.name), err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("list %q: %s: %w", dirKey+namePrefix, filepath.Join(dir, e.name), ErrSymlink)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if err := fn(storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}
