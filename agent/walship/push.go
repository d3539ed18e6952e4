package walship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/fsutil"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// ErrConflict means the archive already holds different content under the
// same name; nothing was overwritten.
var ErrConflict = errors.New("the archive holds a different file under this name")

// ErrNotReady means a file in pg_wal has not been marked ready for
// archiving by PostgreSQL: it may be the segment still being written.
var ErrNotReady = errors.New("PostgreSQL has not marked it ready for archiving")

// MarkerDir is the directory, inside pg_wal, where files pushed ahead of
// their archive_command call are remembered.
const MarkerDir = "pgdr_archive_status"

// Shipper pushes and fetches WAL for one configured node. It is safe for
// concurrent use; the daemon keeps one for its lifetime so that repository
// connections stay warm. Lister lists and verifies the archive, Repairer
// replaces a conflicting archived copy.
type Shipper struct {
	archive
	recipients []age.Recipient

	pushes  flight
	infoOK  checkedRepos                // repositories whose cluster record was checked
	holdsOK checkedRepos                // repositories seen to hold the cluster's record (wal-fetch)
	obs     atomic.Pointer[observerBox] // nil: pushes and fetches are not reported (SetObserver)
	// partialBusy: async repositories with a partial upload in flight.
	partialBusy asyncBusy
}

// flight serializes pushes of one file name: a push of a name already
// being pushed waits for that push to end, then runs itself. It does not
// take the other push's outcome for its own: the two may carry different
// bytes (the WAL receiver's segment and PostgreSQL's file), and the second
// finds an identical object stored (no compression, one header read) or
// reports the conflict. The zero value is ready to use.
type flight struct {
	mu    sync.Mutex
	calls map[string]chan struct{}
}

// do runs fn for name once no other run for name is in flight (or returns
// ctx's error while waiting).
func (f *flight) do(ctx context.Context, name string, fn func() error) error {
	for {
		f.mu.Lock()
		busy, ok := f.calls[name]
		if !ok {
			break
		}
		f.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.calls == nil {
		f.calls = map[string]chan struct{}{}
	}
	done := make(chan struct{})
	f.calls[name] = done
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.calls, name)
		f.mu.Unlock()
		close(done)
	}()
	return fn()
}

// New opens the configured repositories and loads the recipients.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Shipper, error) {
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rs, err := keys.Recipients(cfg)
	if err != nil {
		return nil, err
	}
	return &Shipper{archive: newArchive(cfg, repos, log), recipients: rs}, nil
}

// Lister returns the Lister of s's repositories, sharing s's repositories
// and loaded keys.
func (s *Shipper) Lister() *Lister { return &Lister{archive: s.archive} }

// Repairer returns the Repairer of s's repositories; it pushes through s,
// so a repair's push coalesces with s's pushes of the same file.
func (s *Shipper) Repairer() *Repairer { return &Repairer{archive: s.archive, push: s.pushOne} }

// Repos returns the opened repositories.
func (s *Shipper) Repos() []repo.Repo { return s.repos }

// PushOptions changes what PushWith accepts.
type PushOptions struct {
	// Force pushes a file in a pg_wal directory that PostgreSQL has not
	// marked ready for archiving.
	Force bool
}

// Push archives the file at path (as given to archive_command) and, when it
// lives in a pg_wal directory, pushes up to wal.push_concurrency-1 further
// ready files in parallel. It returns nil only once path is durable in every
// repository. A file in a pg_wal directory must be marked ready (or done)
// in archive_status: see PushWith.
func (s *Shipper) Push(ctx context.Context, path string) error {
	return s.PushWith(ctx, path, PushOptions{})
}

// PushWith is Push with options. Without Force, a file in a pg_wal
// directory (one with an archive_status directory) that has neither
// archive_status/<name>.ready nor .done is refused with ErrNotReady, and so
// is a segment outside pg_wal whose name the data directory's pg_wal holds
// unmarked (a copy of the segment being written):
// archive_command is only ever given ready files, and a copy of the segment
// PostgreSQL is still writing, once stored, conflicts with the finished
// segment and makes every later archive_command fail.
func (s *Shipper) PushWith(ctx context.Context, path string, opts PushOptions) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	name := filepath.Base(abs)
	n, err := wal.ParseName(name)
	if err != nil {
		return err
	}
	pgwal := filepath.Dir(abs)
	// A copy of a segment taken out of pg_wal (cp pg_wal/<current> /tmp/)
	// is checked against the original: the data directory's pg_wal holding
	// that segment not marked ready means it may still be being written.
	check := pgwal
	if readyState(pgwal, name) == "" && n.Kind == wal.KindSegment && s.cfg.Postgres.PGData != "" {
		local := filepath.Join(s.cfg.Postgres.PGData, "pg_wal")
		if _, err := os.Stat(filepath.Join(local, name)); err == nil {
			check = local
		}
	}
	if !opts.Force {
		if err := checkReady(check, name); err != nil {
			if check != pgwal {
				return fmt.Errorf("%s is a copy of a segment in %s: %w", abs, check, err)
			}
			return err
		}
	} else if readyState(check, name) == "not ready" {
		s.log.Warn("pushing a file PostgreSQL has not marked ready for archiving (forced): if it is still being written, the archive gets an incomplete copy (see wal-repair)", "file", abs, "pg_wal", check)
	}
	if ok, err := s.takeMarker(pgwal, name); err != nil {
		return err
	} else if ok {
		s.log.Debug("already pushed ahead", "file", name)
		return nil
	}
	// Files pushed ahead go in parallel with the requested one; a one-shot
	// process waits for them (it would otherwise kill them on exit), but
	// only the requested file's outcome decides the exit status. A failed
	// push ahead is retried when PostgreSQL asks for that file itself.
	var wg sync.WaitGroup
	for _, ahead := range s.readyAhead(pgwal, name, s.cfg.WAL.PushConcurrency-1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.pushAndRemember(ctx, pgwal, ahead)
		}()
	}
	err = s.pushOne(ctx, abs)
	wg.Wait()
	return err
}

func (s *Shipper) pushAndRemember(ctx context.Context, pgwal, name string) {
	if err := s.pushOne(ctx, filepath.Join(pgwal, name)); err != nil {
		s.log.Warn("push ahead failed; will retry when archive_command asks", "file", name, "err", err)
		return
	}
	if err := writeMarker(pgwal, name); err != nil {
		s.log.Warn("remembering pushed file", "file", name, "err", err)
	}
}

// PushAhead pushes up to n ready files from pgwal/archive_status and
// remembers each, so archive_command finds them done. The daemon calls it
// on a timer.
func (s *Shipper) PushAhead(ctx context.Context, pgwal string, n int) {
	var wg sync.WaitGroup
	for _, name := range s.readyAhead(pgwal, "", n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.pushAndRemember(ctx, pgwal, name)
		}()
	}
	wg.Wait()
}

// pushOne pushes one file, coalescing concurrent pushes of the same name.
func (s *Shipper) pushOne(ctx context.Context, path string) error {
	return s.pushes.do(ctx, filepath.Base(path), func() error { return s.push(ctx, path) })
}

func (s *Shipper) push(ctx context.Context, path string) (err error) {
	start := time.Now()
	name := filepath.Base(path)
	n, err := wal.ParseName(name)
	if err != nil {
		return err
	}
	stored := false // the repositories reported their own outcome
	defer func() {
		if !stored {
			s.pushFailed(start, err)
		}
	}()
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wal-push: %w", err)
	}
	return s.pushData(ctx, start, n, data, &stored)
}

// PushSegment archives a WAL file given as bytes (the WAL receiver's
// completed segment): the same object, under the same key, that wal-push
// of a file with these bytes stores, so archive_command later finds it
// archived. It returns nil only once the object is durable in every sync
// repository; different content already stored is ErrConflict.
func (s *Shipper) PushSegment(ctx context.Context, name string, data []byte) error {
	return s.pushes.do(ctx, name, func() (err error) {
		start := time.Now()
		stored := false
		defer func() {
			if !stored {
				s.pushFailed(start, err)
			}
		}()
		n, err := wal.ParseName(name)
		if err != nil {
			return err
		}
		return s.pushData(ctx, start, n, data, &stored)
	})
}

// pushData stores data as the archived WAL file n in every sync repository
// (and queues it for the async ones). A repository that already holds the
// same plaintext (size and SHA-256 recorded in the object's header when it
// was uploaded, by wal-push or by the WAL receiver) is not written again and
// nothing is compressed when every sync repository holds it: the receiver
// uploads completed segments before PostgreSQL's archive_command asks for
// them. *stored is set once the repositories report their own outcome.
func (s *Shipper) pushData(ctx context.Context, start time.Time, n wal.Name, data []byte, stored *bool) error {
	name := n.Raw
	sysid, err := s.sysid.get()
	if err != nil {
		return err
	}
	if n.Kind == wal.KindSegment || n.Kind == wal.KindPartial {
		if _, err := wal.CheckSegment(n, data, sysid); err != nil {
			return err
		}
	}
	key := repo.WALKey(s.cfg.Cluster, name)
	sum := sha256.Sum256(data)
	sync := repo.Sync(s.repos)
	if s.allStored(ctx, sync, key, sum[:], int64(len(data))) {
		*stored = true
		for _, r := range sync {
			if o := s.observer(); o != nil {
				o.ObservePush(r.Name, time.Since(start), nil)
			}
		}
		s.enqueueAsync(name, key, 0)
		s.log.Info("already archived with the same content", "file", name, "bytes", len(data), "repos", len(sync), "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	enc, err := s.seal(key, data, sum[:])
	if err != nil {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	// Only the sync repositories are written; the async ones get the
	// object from the daemon's copier (agent/repocopy).
	g, gctx := errgroup.WithContext(ctx)
	*stored = true
	for _, r := range sync {
		g.Go(func() error {
			err := s.ensureInfo(gctx, r, sysid)
			if err == nil {
				err = putIfAbsent(gctx, r, key, enc, sum[:], int64(len(data)))
			}
			// A push cut short because another repository failed is not
			// this repository's failure.
			cut := err != nil && ctx.Err() == nil && gctx.Err() != nil && errors.Is(err, context.Canceled)
			if o := s.observer(); o != nil && !cut {
				o.ObservePush(r.Name, time.Since(start), err)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("wal-push %s: %w", name, err)
	}
	s.enqueueAsync(name, key, int64(len(enc)))
	s.log.Info("pushed", "file", name, "bytes", len(data), "stored", len(enc), "repos", len(sync), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// enqueueAsync queues the copy of key to the async repositories (if any).
// A queue that cannot be written does not fail archiving: the copier's
// periodic reconcile finds the object missing anyway. An object queued
// twice (a retried push that found it stored) costs the copier one check:
// an entry whose object the async repository holds is done.
func (s *Shipper) enqueueAsync(name, key string, size int64) {
	if len(repo.Sync(s.repos)) == len(s.repos) {
		return
	}
	if err := queue.Enqueue(s.cfg, queue.Entry{Kind: queue.KindObject, Key: key, Size: size}); err != nil {
		s.log.Warn("queueing the copy to the async repositories failed; the daemon's reconcile will copy it", "file", name, "err", err)
	}
}

// allStored reports whether every repository of rs already holds key with
// this plaintext (size and SHA-256 in its header), made durable. Any error
// or difference answers false: the normal push then stores the object or
// reports the conflict.
func (s *Shipper) allStored(ctx context.Context, rs []repo.Repo, key string, sum []byte, size int64) bool {
	if len(rs) == 0 {
		return false
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range rs {
		g.Go(func() error {
			same, err := storedSame(gctx, r, key, sum, size)
			if err == nil && !same {
				err = errNotSame
			}
			return err
		})
	}
	return g.Wait() == nil
}

var errNotSame = errors.New("not stored with the same content")

// storedSame reports whether r holds key with this plaintext, and makes an
// identical stored object durable (an earlier put may have renamed it into
// place and died before syncing the directory, so a store that can is
// asked to Sync it). A missing object is (false, nil); a different one is
// (false, error wrapping ErrConflict).
func storedSame(ctx context.Context, r repo.Repo, key string, sum []byte, size int64) (bool, error) {
	// One GET answers both "is it there?" and "is it the same?"; only the
	// cleartext header is read.
	rc, err := r.Store.Get(ctx, key)
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("%s: %s: %w", r.Name, key, err)
	}
	h, err := objstream.ReadHeader(rc)
	rc.Close()
	if err != nil {
		return false, fmt.Errorf("%s: existing %s: %w", r.Name, key, err)
	}
	if err := r.Verifier.VerifyHeader(h, key); err != nil {
		// An object no fetch would accept (another writer's key, unsigned
		// where signing is required, forged) is not "already archived".
		return false, fmt.Errorf("%w: repository %s already holds %s, which a restore would refuse: %w; nothing was overwritten ('pgdr-agent wal-repair %s' shows it and replaces it on confirmation)",
			ErrConflict, r.Name, key, err, path.Base(key))
	}
	if h.PlainSize != size || !bytes.Equal(h.PlainSHA256, sum) {
		return false, fmt.Errorf("%w: repository %s already holds %s with sha256 %s (%d bytes), this file has sha256 %s (%d bytes); nothing was overwritten "+
			"(if the stored copy was never complete, e.g. pushed by hand while PostgreSQL was still writing it, 'pgdr-agent wal-repair %s' shows both and replaces it on confirmation)",
			ErrConflict, r.Name, key, hex.EncodeToString(h.PlainSHA256), h.PlainSize, hex.EncodeToString(sum), size, path.Base(key))
	}
	if sy, ok := r.Store.(storage.Syncer); ok {
		if err := sy.Sync(ctx, key); err != nil {
			return false, fmt.Errorf("%s: making the identical stored %s durable: %w", r.Name, key, err)
		}
	}
	return true, nil
}

func (s *Shipper) ensureInfo(ctx context.Context, r repo.Repo, sysid uint64) error {
	return s.infoOK.check(r.Name, func() error { return repo.EnsureClusterInfo(ctx, r, s.cfg.Cluster, sysid) })
}

// putIfAbsent stores body under key unless the key exists: an existing
// object with the same plaintext is success once it is durable (see
// storedSame), anything else is ErrConflict and is left as it was.
func putIfAbsent(ctx context.Context, r repo.Repo, key string, body, sum []byte, size int64) error {
	same, err := storedSame(ctx, r, key, sum, size)
	if err != nil || same {
		return err
	}
	if err := r.Store.Put(ctx, key, bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("%s: %w", r.Name, err)
	}
	return nil
}

// readyState says how PostgreSQL has marked the file name in dir:
// "ready" or "done" (archive_status/<name>.ready or .done), "not ready",
// or "" when dir is not a pg_wal directory (no archive_status in it).
func readyState(dir, name string) string {
	status := filepath.Join(dir, "archive_status")
	if fi, err := os.Stat(status); err != nil || !fi.IsDir() {
		return ""
	}
	for _, st := range []string{"ready", "done"} {
		if _, err := os.Stat(filepath.Join(status, name+"."+st)); err == nil {
			return st
		}
	}
	return "not ready"
}

// checkReady refuses a file in a pg_wal directory that PostgreSQL has not
// marked ready or done, with an error wrapping ErrNotReady.
func checkReady(dir, name string) error {
	if readyState(dir, name) != "not ready" {
		return nil
	}
	return fmt.Errorf("wal-push %s: %w: there is no %s or %s.done, so it may be the segment still being written, and an incomplete copy in the archive would make every later archive_command for it fail; archive_command is only given ready files (use --force to push it anyway)",
		filepath.Join(dir, name), ErrNotReady, filepath.Join(dir, "archive_status", name+".ready"), name)
}

// readyAhead lists up to n files waiting in pgwal/archive_status (history
// files first, then in name order, as PostgreSQL archives them), skipping
// except and files already remembered.
func (s *Shipper) readyAhead(pgwal, except string, n int) []string {
	if n <= 0 {
		return nil
	}
	ents, err := os.ReadDir(filepath.Join(pgwal, "archive_status"))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || name == except {
			continue
		}
		if _, err := wal.ParseName(name); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(pgwal, MarkerDir, name)); err == nil {
			continue
		}
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		hi, hj := strings.HasSuffix(names[i], ".history"), strings.HasSuffix(names[j], ".history")
		if hi != hj {
			return hi
		}
		return names[i] < names[j]
	})
	if len(names) > n {
		names = names[:n]
	}
	return names
}

// writeMarker remembers that name was pushed ahead. Run as root (a daemon
// started as root), the directory and marker go to the data directory's
// owner: wal-push, run by PostgreSQL's user, consumes the markers.
func writeMarker(pgwal, name string) error {
	dir := filepath.Join(pgwal, MarkerDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	own, chown := fsutil.InheritOwner(filepath.Dir(pgwal))
	if chown {
		if err := own.Chown(dir); err != nil {
			return err
		}
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if chown {
		if err := own.Chown(f.Name()); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// takeMarker reports whether name was pushed ahead, consuming the marker.
// It also drops markers whose files PostgreSQL no longer has ready, so the
// directory cannot grow without bound.
func (s *Shipper) takeMarker(pgwal, name string) (bool, error) {
	dir := filepath.Join(pgwal, MarkerDir)
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return false, nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 64 {
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(pgwal, "archive_status", e.Name()+".ready")); errors.Is(err, os.ErrNotExist) {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return true, nil
}
