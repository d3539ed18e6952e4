package walship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// ErrNotInArchive means every repository answered that the file is not
// there (restore_command's exit 1: "no such file, recovery may end here").
var ErrNotInArchive = errors.New("not in the archive")

// PrefetchDir is the directory, inside pg_wal, where segments fetched ahead
// of restore_command wait, each complete and verified.
const PrefetchDir = "pgdr_prefetch"

// Fetch restores the archived file name into dest (as restore_command's %f
// and %p). It returns an error wrapping ErrNotInArchive only when no
// repository has the file; an object that exists but cannot be read,
// decrypted or verified in any repository is a different error. A copy
// that fails verification in one repository is replaced by a good copy from
// another, with a warning.
func (s *Shipper) Fetch(ctx context.Context, name, dest string) error {
	n, err := wal.ParseName(name)
	if err != nil {
		return err
	}
	dest, err = filepath.Abs(dest)
	if err != nil {
		return err
	}
	if pgwal := prefetchBase(dest); pgwal != "" && n.Kind == wal.KindSegment {
		pf := filepath.Join(pgwal, PrefetchDir, name)
		switch err := checkPrefetched(pf, n); {
		case err == nil:
			if err := os.Rename(pf, dest); err == nil {
				s.log.Debug("served from prefetch", "file", name)
				return nil
			}
		case errors.Is(err, os.ErrNotExist):
		default:
			// Never hand PostgreSQL a short or foreign file: a zeroed or
			// cut segment reads as the end of WAL and ends recovery early.
			s.log.Warn("discarding a bad prefetched file; fetching it from the repository", "file", name, "err", err)
			if err := os.Remove(pf); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("wal-fetch %s: removing the bad prefetched file: %w", name, err)
			}
		}
	}
	key := repo.WALKey(s.cfg.Cluster, name)
	var errs, asyncErrs []error
	for _, r := range s.readOrder() {
		err := s.fetchFrom(ctx, r, key, dest, false, nil)
		if err == nil {
			if failed := append(errs, asyncErrs...); len(failed) > 0 {
				s.log.Warn("fetched from a later repository after failures", "file", name, "repo", r.Name, "errors", errors.Join(failed...))
			}
			return nil
		}
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case r.Async:
			asyncErrs = append(asyncErrs, err)
		default:
			errs = append(errs, err)
		}
	}
	sync := repo.Sync(s.repos)
	if len(sync) == 0 { // only async repositories (not a configuration Parse accepts)
		errs, asyncErrs = append(errs, asyncErrs...), nil
		sync = s.repos
	}
	if len(errs) == 0 {
		// "Not found" ends recovery: only a repository that holds the
		// cluster may say it. A file repository not mounted, or its root
		// moved, answers "not found" for everything. Every write reaches
		// every sync repository, so their answer is the archive's: an
		// async repository may lag or be down without changing it.
		for _, r := range sync {
			if err := s.checkHolds(ctx, r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		if len(asyncErrs) > 0 {
			s.log.Warn("not in the sync repositories; an async repository could not be read", "file", name, "errors", errors.Join(asyncErrs...))
		}
		return fmt.Errorf("%s: %w", name, ErrNotInArchive)
	}
	return fmt.Errorf("wal-fetch %s: %w", name, errors.Join(append(errs, asyncErrs...)...))
}

// readOrder is the order fetches try the repositories in: the sync ones
// (which hold every archived file), then the async ones (copies that may
// lag or be down), each in configuration order.
func (s *Shipper) readOrder() []repo.Repo {
	return append(repo.Sync(s.repos), repo.Async(s.repos)...)
}

// checkHolds checks, once per process and repository, that r holds the
// cluster's record (repo.CheckClusterInfo).
func (s *Shipper) checkHolds(ctx context.Context, r repo.Repo) error {
	return s.holdsOK.check(r.Name, func() error { return repo.CheckClusterInfo(ctx, r, s.cfg.Cluster) })
}

// checkPrefetched checks that the prefetched file at path is the whole
// segment n: a segment header whose page address is n's, and exactly the
// segment size the header gives. A missing file wraps os.ErrNotExist.
func checkPrefetched(path string, n wal.Name) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("prefetched %s: %w", path, err)
	}
	b := make([]byte, wal.LongHeaderSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return fmt.Errorf("prefetched %s (%d bytes): reading its segment header: %w", path, fi.Size(), err)
	}
	h, err := wal.ParseSegmentHeader(b)
	if err != nil {
		return fmt.Errorf("prefetched %s: %w", path, err)
	}
	if fi.Size() != int64(h.SegmentSize) {
		return fmt.Errorf("prefetched %s is %d bytes, its header says segments are %d bytes", path, fi.Size(), h.SegmentSize)
	}
	if want := n.SegNo(uint64(h.SegmentSize)) * uint64(h.SegmentSize); h.PageAddr != want {
		return fmt.Errorf("prefetched %s starts at %X/%X, its name says %X/%X", path, h.PageAddr>>32, uint32(h.PageAddr), want>>32, uint32(want))
	}
	return nil
}

// fetchFrom writes the verified plaintext of key to dest through a
// temporary file, so dest appears only complete and verified. With durable,
// the file is fsynced before the rename and the directory after it, so that
// after an OS crash dest is either absent or whole (a prefetched file waits
// on disk; a file fetched for restore_command is PostgreSQL's to sync).
// With own, the file is given to own before it is renamed into place.
func (s *Shipper) fetchFrom(ctx context.Context, r repo.Repo, key, dest string, durable bool, own *fsutil.Owner) (err error) {
	defer func(start time.Time) { s.fetched(r, start, err) }(time.Now())
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return err
		}
		return fmt.Errorf("repository %s: reading %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	ids, err := s.keys.identities()
	if err != nil {
		return fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	or, err := s.pool.NewReaderOpts(rc, r.SignedReadOptions(key, ids, true))
	if err != nil {
		return fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	defer or.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".pgdr-fetch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, or); err != nil {
		tmp.Close()
		return fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if own != nil {
		if err := own.Chown(tmp.Name()); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return err
	}
	if durable {
		return fsutil.SyncDir(filepath.Dir(dest))
	}
	return nil
}

// prefetchBase returns the pg_wal directory dest lives in, or "" when dest
// is not in a PostgreSQL WAL directory (a manual fetch elsewhere).
func prefetchBase(dest string) string {
	dir := filepath.Dir(dest)
	if fi, err := os.Stat(filepath.Join(dir, "archive_status")); err == nil && fi.IsDir() {
		return dir
	}
	return ""
}

// PrefetchPlan returns the pg_wal directory to prefetch into and the
// segment to start after, or ok=false when nothing should be prefetched
// (not a segment, not a WAL directory, prefetch disabled).
func (s *Shipper) PrefetchPlan(name, dest string) (pgwal string, ok bool) {
	if s.cfg.WAL.Prefetch <= 0 {
		return "", false
	}
	n, err := wal.ParseName(name)
	if err != nil || n.Kind != wal.KindSegment {
		return "", false
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return "", false
	}
	pgwal = prefetchBase(abs)
	return pgwal, pgwal != ""
}

// Prefetch fetches up to wal.prefetch segments following after (on its
// timeline, segments of segSize bytes) into pgwal/pgdr_prefetch, a few at a time, stopping at the end
// of the archive. Only one prefetcher runs per pg_wal directory; another
// caller returns at once. Stale prefetched files (before after) are removed.
func (s *Shipper) Prefetch(ctx context.Context, pgwal, after string, segSize uint64) error {
	n, err := wal.ParseName(after)
	if err != nil || n.Kind != wal.KindSegment {
		return fmt.Errorf("prefetch: %q is not a segment name", after)
	}
	dir := filepath.Join(pgwal, PrefetchDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Run as root (a daemon started as root), what is created here goes
	// to the data directory's owner: wal-fetch, run by PostgreSQL's user,
	// must be able to clean the directory, and PostgreSQL to read a
	// prefetched segment once it is renamed into place.
	var own *fsutil.Owner
	if o, ok := fsutil.InheritOwner(filepath.Dir(pgwal)); ok {
		own = &o
		if err := own.Chown(dir); err != nil {
			return err
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if own != nil {
		if err := own.Chown(lock.Name()); err != nil {
			return err
		}
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // another prefetcher is at work
	}
	if segSize == 0 || segSize&(segSize-1) != 0 {
		segSize = wal.DefaultSegmentSize
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if e.Name() != ".lock" && e.Name() <= after {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	names := make([]string, 0, s.cfg.WAL.Prefetch)
	next := n
	for range s.cfg.WAL.Prefetch {
		nn, _ := wal.ParseName(next.Next(segSize))
		names = append(names, nn.Raw)
		next = nn
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	end := ""
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			continue
		}
		mu.Lock()
		stop := end != "" && name > end
		mu.Unlock()
		if stop {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.prefetchOne(ctx, dir, name, own); err != nil {
				mu.Lock()
				if end == "" || name < end {
					end = name
				}
				mu.Unlock()
				if !errors.Is(err, storage.ErrNotFound) {
					s.log.Debug("prefetch stopped", "file", name, "err", err)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

func (s *Shipper) prefetchOne(ctx context.Context, dir, name string, own *fsutil.Owner) error {
	key := repo.WALKey(s.cfg.Cluster, name)
	dest := filepath.Join(dir, name)
	var last error = storage.ErrNotFound
	for _, r := range s.readOrder() {
		err := s.fetchFrom(ctx, r, key, dest, true, own)
		if err == nil {
			return nil
		}
		last = err
	}
	return last
}
