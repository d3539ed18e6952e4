package walship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// partialAsyncTimeout bounds one partial upload to, or deletion from, an
// async repository, which runs apart from the receiver's own call.
const partialAsyncTimeout = 30 * time.Second

// asyncBusy is the async repositories with a partial upload in flight: a
// slow remote repository gets the newest copy when its last one is done,
// never a pile of them. The zero value is ready to use.
type asyncBusy struct {
	mu   sync.Mutex
	busy map[string]bool
}

// take marks repository name busy; false if it already was.
func (a *asyncBusy) take(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy[name] {
		return false
	}
	if a.busy == nil {
		a.busy = map[string]bool{}
	}
	a.busy[name] = true
	return true
}

func (a *asyncBusy) done(name string) {
	a.mu.Lock()
	delete(a.busy, name)
	a.mu.Unlock()
}

// PushPartial stores data, the first len(data) bytes of segment name as
// the WAL receiver has them durable in its spool, as the segment's partial
// object (repo.StreamPartialKey). The object is written like an archived
// segment (compressed, encrypted, signed under its key, its plaintext size
// and SHA-256 in the header). A repository whose verified partial copy of
// the segment is already as long is left as it is: the copy never moves
// backwards (a receiver restarted from its slot's older position, or a
// second receiver behind the first). It returns nil once every sync
// repository holds a copy at least this long. Async repositories are
// written apart, each with its own timeout and at most one upload in
// flight: a remote region's outage or slowness never holds the receiver,
// and a failure there is logged (the next upload carries newer WAL).
func (s *Shipper) PushPartial(ctx context.Context, name string, data []byte) error {
	n, err := wal.ParseName(name)
	if err != nil {
		return err
	}
	if n.Kind != wal.KindSegment {
		return fmt.Errorf("partial upload of %q: not a segment name", name)
	}
	sysid, err := s.sysid.get()
	if err != nil {
		return err
	}
	pn, _ := wal.ParseName(name + ".partial")
	h, err := wal.CheckSegment(pn, data, sysid)
	if err != nil {
		return err
	}
	if uint64(len(data)) > uint64(h.SegmentSize) {
		return fmt.Errorf("partial upload of %s: %d bytes, more than a segment (%d)", name, len(data), h.SegmentSize)
	}
	start := time.Now()
	key := repo.StreamPartialKey(s.cfg.Cluster, name)
	sum := sha256.Sum256(data)
	enc, err := s.seal(key, data, sum[:])
	if err != nil {
		return fmt.Errorf("partial upload of %s: %w", name, err)
	}
	size := int64(len(data))
	for _, r := range repo.Async(s.repos) {
		if !s.partialBusy.take(r.Name) {
			continue
		}
		go func() {
			defer s.partialBusy.done(r.Name)
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), partialAsyncTimeout)
			defer cancel()
			if err := putPartial(actx, r, key, enc, size); err != nil {
				s.log.Warn("partial segment upload to an async repository failed; the next upload retries", "repo", r.Name, "file", name, "err", err)
			}
		}()
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range repo.Sync(s.repos) {
		g.Go(func() error { return putPartial(gctx, r, key, enc, size) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("partial upload of %s: %w", name, err)
	}
	s.log.Debug("partial segment uploaded", "file", name, "bytes", len(data), "stored", len(enc), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// putPartial stores a partial copy of size plaintext bytes under key in r
// unless r holds a verified copy at least as long.
func putPartial(ctx context.Context, r repo.Repo, key string, enc []byte, size int64) error {
	if rc, err := r.Store.Get(ctx, key); err == nil {
		h, herr := objstream.ReadHeader(rc)
		rc.Close()
		if herr == nil && r.Verifier.VerifyHeader(h, key) == nil && h.PlainSize >= size {
			return nil
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s: %s: %w", r.Name, key, err)
	}
	if err := r.Store.Put(ctx, key, bytes.NewReader(enc), int64(len(enc))); err != nil {
		return fmt.Errorf("%s: %w", r.Name, err)
	}
	return nil
}

// DeletePartial removes segment name's partial object from the sync
// repositories (once the complete segment is archived there). An async
// repository keeps its partial copy until its own copy of the segment is
// there: the segment reaches it through the copier later, and until then
// the partial is all it has of that WAL; expiry removes it once that
// repository holds the segment. A missing object is not an error.
func (s *Shipper) DeletePartial(ctx context.Context, name string) error {
	if n, err := wal.ParseName(name); err != nil || n.Kind != wal.KindSegment {
		return fmt.Errorf("deleting the partial copy of %q: not a segment name", name)
	}
	key := repo.StreamPartialKey(s.cfg.Cluster, name)
	var errs []error
	for _, r := range repo.Sync(s.repos) {
		dctx, cancel := context.WithTimeout(ctx, partialAsyncTimeout)
		err := r.Store.Delete(dctx, key)
		cancel()
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: deleting %s: %w", r.Name, key, err))
		}
	}
	return errors.Join(errs...)
}

// seal compresses, encrypts and signs data, whose SHA-256 is sum, as the
// object stored under key.
func (s *Shipper) seal(key string, data, sum []byte) ([]byte, error) {
	signer, err := s.keys.loadSigner()
	if err != nil {
		return nil, err
	}
	opts := keys.StreamOptions(s.cfg, s.recipients)
	opts.PlainSize = int64(len(data))
	opts.PlainSHA256 = sum
	opts.TrustSHA256 = true              // hashed just above from the same bytes
	opts.Signer, opts.Name = signer, key // signs the key, size and SHA-256
	var enc bytes.Buffer
	enc.Grow(len(data)/2 + 4096) // WAL compresses 2:1 to 20:1: one allocation in the common case
	w, err := s.pool.NewWriter(&enc, opts)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return enc.Bytes(), nil
}
