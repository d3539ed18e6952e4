package expire

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/storage"
)

// putHook runs hook before the first Put of a key under prefix.
type putHook struct {
	storage.ObjectStore
	prefix string
	hook   func()
}

func (p *putHook) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if p.hook != nil && strings.HasPrefix(key, p.prefix) {
		h := p.hook
		p.hook = nil
		h()
	}
	return p.ObjectStore.Put(ctx, key, r, size)
}

// The objects of a backup without a manifest, old enough to be a failed
// backup's, are kept when a copy into this (async) repository reserved the
// backup after expiry listed it: the copier, having reserved before
// expiry's deletion mark was written, did not see the mark and goes on
// trusting those objects (agent/repocopy). And when its copy completed
// (manifest written, reservation released) in the meantime, they stay too.
func TestLeftoverKeptWhileCopied(t *testing.T) {
	for _, done := range []bool{false, true} {
		f := newFixture(t, false)
		id := "20261204T000000F"
		obj := backup.Prefix(cluster) + id + "/pgdata/base/1/1"
		f.put(obj)
		ph := &putHook{ObjectStore: f.r.Store, prefix: backup.DeletingKey(cluster, id)}
		ph.hook = func() {
			if done {
				f.put(backup.ManifestKey(cluster, id))
				return
			}
			f.put(backup.ReservePrefix(cluster, id[:len(id)-1]) + "copy-1")
		}
		later := func() time.Time { return time.Now().Add(2 * DefaultGrace) }
		if _, err := Run(context.Background(), f.deps(ph), Options{TrustUnsigned: true, Spec: fullRule(1), Now: later}); err != nil {
			t.Fatal(err)
		}
		if !f.exists(obj) {
			t.Fatalf("before: the leftover objects of %s were deleted while a copy (done %v) trusted them", id, done)
		}
		if f.exists(backup.DeletingKey(cluster, id)) {
			t.Fatal("the deletion mark was left")
		}
	}
}
