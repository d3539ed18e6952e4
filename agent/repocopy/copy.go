package repocopy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// copyEntry carries out one queue entry; nil means it is done (copied and
// verified, already there, or gone from the sync repositories).
func (c *Copier) copyEntry(ctx context.Context, t Target, e queue.Entry) error {
	switch e.Kind {
	case queue.KindObject:
		src, info, err := c.find(ctx, e.Key)
		if errors.Is(err, storage.ErrNotFound) {
			c.d.Log.Debug("not copied: gone from the sync repositories", "repo", t.Repo.Name, "key", e.Key)
			return nil
		}
		if err != nil {
			return err
		}
		return c.copyObject(ctx, t, src, info)
	case queue.KindBackup:
		return c.copyBackup(ctx, t, e.Key)
	}
	return fmt.Errorf("copy queue entry of unknown kind %q", e.Kind)
}

// checkEntry refuses, as corrupt (ErrCorrupt: quarantined), an entry the
// copier must not carry out whoever wrote it: an object outside the
// cluster's prefix or not a valid key, a record only the repository it was
// written to holds (expiry's marks: see skip), an object under the
// backups' prefix (a backup's objects go with its entry, manifest last;
// reservations are never copied), a backup entry whose key is not a
// backup ID.
func (c *Copier) checkEntry(t Target, e queue.Entry) error {
	bad := ""
	switch e.Kind {
	case queue.KindObject:
		switch {
		case storage.ValidateKey(e.Key) != nil:
			bad = "not a valid object key"
		case !strings.HasPrefix(e.Key, c.d.Cluster+"/"):
			bad = "outside the cluster " + c.d.Cluster
		case skip(e.Key, c.d.Cluster):
			bad = "a record that is never copied"
		case strings.HasPrefix(e.Key, backup.Prefix(c.d.Cluster)):
			bad = "under the backups' prefix: a backup's objects are copied with it (manifest last), reservations never"
		}
	case queue.KindBackup:
		if !backup.ValidID(e.Key) {
			bad = "not a backup ID"
		}
	}
	if bad == "" {
		return nil
	}
	return fmt.Errorf("%w %s: %s %q: %s", queue.ErrCorrupt, filepath.Join(t.Queue.Dir(), e.Name()), e.Kind, e.Key, bad)
}

// find returns the first sync repository holding key, with its info.
func (c *Copier) find(ctx context.Context, key string) (repo.Repo, storage.ObjectInfo, error) {
	var errs []error
	for _, r := range c.d.Sources {
		info, err := r.Store.Stat(ctx, key)
		if err == nil {
			return r, info, nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			errs = append(errs, fmt.Errorf("repository %s: %s: %w", r.Name, key, err))
		}
	}
	if len(errs) > 0 {
		return repo.Repo{}, storage.ObjectInfo{}, errors.Join(errs...)
	}
	return repo.Repo{}, storage.ObjectInfo{}, fmt.Errorf("%s: %w", key, storage.ErrNotFound)
}

// copyObject copies one object unless t holds it at the same size.
func (c *Copier) copyObject(ctx context.Context, t Target, src repo.Repo, info storage.ObjectInfo) error {
	if have, err := t.Repo.Store.Stat(ctx, info.Key); err == nil && have.Size == info.Size {
		return nil
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("repository %s: %s: %w", t.Repo.Name, info.Key, err)
	}
	return c.copyVerified(ctx, t, src, info)
}

// copyVerified streams the object from src to t, then reads it back from
// t and compares size and SHA-256 with what was read from src. A copy
// that differs is deleted (so that no later size check takes it for a
// good one) and reported with ErrVerify.
func (c *Copier) copyVerified(ctx context.Context, t Target, src repo.Repo, info storage.ObjectInfo) error {
	key := info.Key
	rc, err := src.Store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("repository %s: %s: %w", src.Name, key, err)
	}
	h := sha256.New()
	err = t.Repo.Store.Put(ctx, key, io.TeeReader(rc, h), info.Size)
	rc.Close()
	if err != nil {
		return fmt.Errorf("copying %s from %s to %s: %w", key, src.Name, t.Repo.Name, err)
	}
	want := h.Sum(nil)
	back, err := t.Repo.Store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("repository %s: reading back %s: %w", t.Repo.Name, key, err)
	}
	h.Reset()
	n, err := io.Copy(h, back)
	back.Close()
	if err != nil {
		return fmt.Errorf("repository %s: reading back %s: %w", t.Repo.Name, key, err)
	}
	if got := h.Sum(nil); n != info.Size || !bytes.Equal(got, want) {
		_ = t.Repo.Store.Delete(context.WithoutCancel(ctx), key)
		return fmt.Errorf("%w: repository %s: %s read back as %d bytes with sha256 %s, %s holds %d bytes with sha256 %s (the copy was deleted and will be tried again)",
			ErrVerify, t.Repo.Name, key, n, hex.EncodeToString(got), src.Name, info.Size, hex.EncodeToString(want))
	}
	c.copied(t, info.Size)
	return nil
}

// copyBackup copies backup id from the first sync repository holding its
// manifest: every data object t lacks (or holds at another size) first,
// the manifest last. Before its manifest, what it needs to be restored
// from t alone must be complete in t: its parent chain (each parent
// copied first unless t holds its manifest) and the WAL from its start to
// its stop segment (and its timeline's history file). A backup whose
// manifest no sync repository holds (expired, or never finished) is not
// copied.
func (c *Copier) copyBackup(ctx context.Context, t Target, id string) error {
	return c.copyBackupIn(ctx, t, id, 0)
}

// maxChain bounds the parent chain followed (as backup.Chain does).
const maxChain = 1000

func (c *Copier) copyBackupIn(ctx context.Context, t Target, id string, depth int) error {
	if !backup.ValidID(id) {
		return fmt.Errorf("copy queue entry: %q is not a backup ID", id)
	}
	mkey := backup.ManifestKey(c.d.Cluster, id)
	src, minfo, err := c.find(ctx, mkey)
	if errors.Is(err, storage.ErrNotFound) {
		if depth > 0 {
			// The child's manifest was there: its parent went since
			// (expired with it, child first), or the chain is broken.
			return fmt.Errorf("backup %s: no sync repository holds its manifest: %w", id, err)
		}
		c.d.Log.Debug("backup not copied: no sync repository holds its manifest", "repo", t.Repo.Name, "backup", id)
		return nil
	}
	if err != nil {
		return err
	}
	// Complete in t already (the manifest goes last).
	if have, err := t.Repo.Store.Stat(ctx, mkey); err == nil && have.Size == minfo.Size {
		return nil
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("repository %s: %s: %w", t.Repo.Name, mkey, err)
	}
	h, err := backup.LoadManifestHeader(ctx, src, c.d.Cluster, id)
	if err != nil {
		return fmt.Errorf("copying backup %s: %w", id, err)
	}
	if h.Parent != "" {
		if depth >= maxChain {
			return fmt.Errorf("copying backup %s: parent chain too long (a loop?)", id)
		}
		_, err := t.Repo.Store.Stat(ctx, backup.ManifestKey(c.d.Cluster, h.Parent))
		if errors.Is(err, storage.ErrNotFound) {
			err = c.copyBackupIn(ctx, t, h.Parent, depth+1)
		}
		if err != nil {
			return fmt.Errorf("copying backup %s: its parent %s is not complete in repository %s: %w", id, h.Parent, t.Repo.Name, err)
		}
	}
	release, err := c.reserve(ctx, t, id)
	if err != nil {
		return err
	}
	defer release()
	if h.Parent != "" {
		// As a backup being taken does: record the child on its parent
		// in t, then check that expiry there is not deleting the parent
		// and that its chain is still there. Expiry in t, which does not
		// hold this child yet, would otherwise delete the parent under
		// the manifest written below.
		if err := backup.ClaimParent(ctx, []repo.Repo{t.Repo}, c.d.Cluster, h.Parent, id); err != nil {
			return fmt.Errorf("copying backup %s: %w; the copy is tried again later", id, err)
		}
	}
	if err := c.copyBackupWAL(ctx, t, h); err != nil {
		return err
	}
	prefix := backup.Prefix(c.d.Cluster) + id + "/"
	have := map[string]int64{}
	if err := t.Repo.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		have[oi.Key] = oi.Size
		return nil
	}); err != nil {
		return fmt.Errorf("repository %s: listing %s: %w", t.Repo.Name, prefix, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(t.Concurrency, 1))
	err = src.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if oi.Key == mkey {
			return nil
		}
		if n, ok := have[oi.Key]; ok && n == oi.Size {
			return nil
		}
		if gctx.Err() != nil {
			return gctx.Err()
		}
		g.Go(func() error { return c.copyVerified(gctx, t, src, oi) })
		return nil
	})
	if werr := g.Wait(); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("repository %s: listing %s: %w", src.Name, prefix, err)
	}
	if n, ok := have[mkey]; ok && n == minfo.Size {
		return nil
	}
	return c.copyVerified(ctx, t, src, minfo)
}

// copyBackupWAL copies the WAL backup h needs to be consistent (its start
// to its stop segment) unless t holds it, and its timeline's history file
// when a sync repository holds one. A segment no sync repository holds
// fails the copy: the backup is being expired (its manifest goes first,
// so the next try drops it) or is not restorable anywhere.
func (c *Copier) copyBackupWAL(ctx context.Context, t Target, h *backup.ManifestHeader) error {
	if h.SegmentSize == 0 {
		return fmt.Errorf("copying backup %s: its manifest has no WAL segment size", h.ID)
	}
	var keys []string
	if h.Timeline > 1 {
		keys = append(keys, repo.WALKey(c.d.Cluster, wal.HistoryFileName(h.Timeline)))
	}
	for _, s := range wal.SegmentsBetween(h.Timeline, h.StartLSN, h.StopLSN, h.SegmentSize) {
		keys = append(keys, repo.WALKey(c.d.Cluster, s))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(t.Concurrency, 1))
	for i, k := range keys {
		history := h.Timeline > 1 && i == 0
		g.Go(func() error {
			src, info, err := c.find(gctx, k)
			if errors.Is(err, storage.ErrNotFound) && history {
				return nil
			}
			if err != nil {
				return fmt.Errorf("copying backup %s: the WAL it needs: %w", h.ID, err)
			}
			return c.copyObject(gctx, t, src, info)
		})
	}
	return g.Wait()
}

// ErrLeftoverExpiring means expiry, in the async repository, is deleting
// the objects of a backup without a manifest there (a copy cut short) that
// the copier was about to complete; the copy is tried again later.
var ErrLeftoverExpiring = errors.New("expiry is deleting this backup's objects in the async repository")

// reserve writes, in t, a reservation of backup id's stamp and its start
// record (as a backup being taken does), then checks that expiry is not deleting id's objects
// there (backup.DeletingKey). Expiry, before deleting the objects of a
// backup without a manifest, writes that marker and then looks for a
// reservation (and the manifest): of the two, at least one sees the
// other, so expiry never deletes objects the copier took for copied
// while it writes the manifest. The reservation goes once the copy ends.
// While it is fresh, expiry in t expires no backup (as while a backup
// runs).
func (c *Copier) reserve(ctx context.Context, t Target, id string) (release func(), err error) {
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	key := backup.ReservePrefix(c.d.Cluster, id[:len(id)-1]) + "copy-" + hex.EncodeToString(nonce[:])
	body := fmt.Sprintf(`{"copy":%q,"time":%q}`, id, time.Now().UTC().Format(time.RFC3339Nano))
	if err := t.Repo.Store.Put(ctx, key, strings.NewReader(body), int64(len(body))); err != nil {
		return nil, fmt.Errorf("repository %s: reserving backup %s for its copy: %w", t.Repo.Name, id, err)
	}
	release = func() { _ = t.Repo.Store.Delete(context.WithoutCancel(ctx), key) }
	// The start record, as a backup's (left in place; expiry removes it
	// once old): expiry in t lists them again before deleting WAL, and
	// deletes none if one appeared or was rewritten since its plan, which
	// did not know this backup's WAL is needed.
	skey := backup.StartedKey(c.d.Cluster, id[:len(id)-1])
	if err := t.Repo.Store.Put(ctx, skey, strings.NewReader(body), int64(len(body))); err != nil {
		release()
		return nil, fmt.Errorf("repository %s: recording the start of backup %s's copy: %w", t.Repo.Name, id, err)
	}
	mark := backup.DeletingKey(c.d.Cluster, id)
	_, err = t.Repo.Store.Stat(ctx, mark)
	if err == nil {
		release()
		return nil, fmt.Errorf("repository %s: backup %s: %w (%s); the copy is tried again later", t.Repo.Name, id, ErrLeftoverExpiring, mark)
	}
	if !errors.Is(err, storage.ErrNotFound) {
		release()
		return nil, fmt.Errorf("repository %s: checking %s: %w", t.Repo.Name, mark, err)
	}
	return release, nil
}
