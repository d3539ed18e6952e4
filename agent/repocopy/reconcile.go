package repocopy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// Reconcile lists the cluster's objects in the first sync repository that
// answers and in t together and queues, in t's queue, what t lacks or holds
// at another size and is not queued already: each backup with a manifest
// in the sync repository as one backup entry, everything else object by
// object. The two listings are merged as they stream (both are in key
// order), so memory grows with what is missing, not with the bucket.
func (c *Copier) Reconcile(ctx context.Context, t Target) error {
	var errs []error
	for _, src := range c.d.Sources {
		add, err := c.missing(ctx, src.Store, t.Repo.Store)
		if err != nil {
			errs = append(errs, fmt.Errorf("reconciling %s with %s: %w", t.Repo.Name, src.Name, err))
			continue
		}
		queued := map[string]bool{}
		ps, _, err := t.Queue.List()
		if err != nil {
			return err
		}
		for _, p := range ps {
			queued[p.Hash] = true
		}
		n := 0
		for _, e := range add {
			if queued[queue.Hash(e.Kind, e.Key)] {
				continue
			}
			if err := t.Queue.Add(e); err != nil {
				return err
			}
			n++
		}
		c.mu.Lock()
		c.status[t.Repo.Name].LastReconcile = time.Now().UTC()
		c.mu.Unlock()
		if n > 0 {
			c.d.Log.Info("reconcile queued missing objects", "repo", t.Repo.Name, "from", src.Name, "entries", n)
		}
		return nil
	}
	return errors.Join(errs...)
}

// missing merges the listings of src and dst under the cluster's prefix
// and returns the entries to queue.
func (c *Copier) missing(ctx context.Context, src, dst storage.ObjectStore) ([]queue.Entry, error) {
	prefix := c.d.Cluster + "/"
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan storage.ObjectInfo, 256)
	dstErr := make(chan error, 1)
	go func() {
		defer close(ch)
		dstErr <- dst.List(lctx, prefix, func(oi storage.ObjectInfo) error {
			select {
			case ch <- oi:
				return nil
			case <-lctx.Done():
				return lctx.Err()
			}
		})
	}()
	var cur *storage.ObjectInfo
	next := func() {
		if oi, ok := <-ch; ok {
			cur = &oi
		} else {
			cur = nil
		}
	}
	next()
	var out []queue.Entry
	bprefix := backup.Prefix(c.d.Cluster)
	// The backup being looked at: its objects come together, the
	// manifest ("backup.manifest") before the data ("pgdata/...").
	var b struct {
		id       string
		manifest bool // the source holds it
		missing  bool
		entry    queue.Entry
	}
	flush := func() {
		if b.id != "" && b.manifest && b.missing {
			out = append(out, b.entry)
		}
		b.id, b.manifest, b.missing = "", false, false
	}
	err := src.List(ctx, prefix, func(s storage.ObjectInfo) error {
		for cur != nil && cur.Key < s.Key {
			next()
		}
		have := cur != nil && cur.Key == s.Key && cur.Size == s.Size
		if rest, ok := strings.CutPrefix(s.Key, bprefix); ok {
			id, _, _ := strings.Cut(rest, "/")
			if strings.HasSuffix(id, backup.ReservedSuffix) {
				return nil // a backup in progress
			}
			if !backup.ValidID(id) {
				return nil // not a backup's (never copied: the copier would refuse its entry)
			}
			if id != b.id {
				flush()
				b.id = id
				b.entry = queue.Entry{Kind: queue.KindBackup, Key: id, Time: s.ModTime}
			}
			if s.Key == backup.ManifestKey(c.d.Cluster, id) {
				b.manifest = true
			}
			b.entry.Objects++
			b.entry.Size += s.Size
			if s.ModTime.Before(b.entry.Time) {
				b.entry.Time = s.ModTime
			}
			b.missing = b.missing || !have
			return nil
		}
		flush()
		if have || skip(s.Key, c.d.Cluster) {
			return nil
		}
		out = append(out, queue.Entry{Kind: queue.KindObject, Key: s.Key, Size: s.Size, Objects: 1, Time: s.ModTime})
		return nil
	})
	flush()
	cancel()
	for range ch { // let the listing goroutine end
	}
	derr := <-dstErr
	if err != nil {
		return nil, fmt.Errorf("listing the source: %w", err)
	}
	if derr != nil && !errors.Is(derr, context.Canceled) {
		return nil, fmt.Errorf("listing the async repository: %w", derr)
	}
	if derr != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, nil
}

// skip says whether key is a record only the repository it was written to
// should hold: expiry's records of backups starting and of a deletion in
// progress, and the WAL receiver's partial segments (it writes them to
// every repository itself, and a copy made here would outlive the
// receiver's deletion of the partial).
func skip(key, cluster string) bool {
	return strings.HasPrefix(key, backup.StartedPrefix(cluster)) || strings.HasPrefix(key, backup.DeletingPrefix(cluster)) ||
		strings.HasPrefix(key, repo.StreamPrefix(cluster))
}
