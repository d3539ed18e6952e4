package walship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// PushPartial stores data, the first len(data) bytes of segment name as
// the WAL receiver has them durable in its spool, as the segment's partial
// object (repo.StreamPartialKey), replacing an older partial copy. The
// object is written like an archived segment (compressed, encrypted,
// signed under its key, its plaintext size and SHA-256 in the header), to
// every repository: it returns nil once every sync repository holds it; an
// async repository that fails is logged, not returned (a remote region's
// outage must not stop the receiver), and gets the next copy.
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
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range s.repos {
		g.Go(func() error {
			err := r.Store.Put(gctx, key, bytes.NewReader(enc), int64(len(enc)))
			if err != nil && r.Async {
				s.log.Warn("partial segment upload to an async repository failed; the next upload retries", "repo", r.Name, "file", name, "err", err)
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", r.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("partial upload of %s: %w", name, err)
	}
	s.log.Debug("partial segment uploaded", "file", name, "bytes", len(data), "stored", len(enc), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// DeletePartial removes segment name's partial object from every
// repository (once the complete segment is archived). A missing object is
// not an error.
func (s *Shipper) DeletePartial(ctx context.Context, name string) error {
	if _, err := wal.ParseName(name); err != nil || len(name) != 24 {
		return fmt.Errorf("deleting the partial copy of %q: not a segment name", name)
	}
	key := repo.StreamPartialKey(s.cfg.Cluster, name)
	var errs []error
	for _, r := range s.repos {
		if err := r.Store.Delete(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
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
	enc.Grow(len(data)/4 + 4096)
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
