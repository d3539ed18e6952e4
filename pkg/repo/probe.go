package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// explainer is implemented by stores that can say what an error of theirs
// means for the operator (s3store: a missing bucket, a wrong secret).
type explainer interface{ Explain(error) string }

// Probe checks that a repository works for the cluster the way archiving
// and backups will use it: it lists the cluster's objects, writes a small
// object at the repository's root, reads it back, compares it and deletes
// it. The object sits at the root, not under the cluster, so that a probe
// run as another user than the archiver's never creates the cluster's
// directory. A file repository whose root does not exist yet is reported
// as such without writing anything (the first archived segment creates it).
// Errors name the repository and, where the store can, say in plain words
// what is wrong.
func Probe(ctx context.Context, r Repo, cluster string) error {
	if fs, ok := r.Store.(*filestore.Store); ok {
		if _, err := os.Stat(fs.Root()); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("repository %s (%s): the directory %s does not exist yet: create it, owned by the user PostgreSQL runs as, or let the first archived segment create it", r.Name, r.Store, fs.Root())
		}
	}
	fail := func(step string, err error) error {
		if ex, ok := r.Store.(explainer); ok {
			if why := ex.Explain(err); why != "" {
				return fmt.Errorf("repository %s (%s): %s failed: %s (%w)", r.Name, r.Store, step, why, err)
			}
		}
		return fmt.Errorf("repository %s (%s): %s failed: %w", r.Name, r.Store, step, err)
	}
	stop := errors.New("stop")
	if err := r.Store.List(ctx, cluster+"/", func(storage.ObjectInfo) error { return stop }); err != nil && !errors.Is(err, stop) {
		return fail("listing "+cluster+"/", err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := ".pgdr-probe-" + hex.EncodeToString(rnd[:])
	body := []byte("pgdr repository probe " + key + "\n")
	if err := r.Store.Put(ctx, key, bytes.NewReader(body), int64(len(body))); err != nil {
		return fail("writing a test object", err)
	}
	defer func() { _ = r.Store.Delete(context.WithoutCancel(ctx), key) }()
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return fail("reading the test object back", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return fail("reading the test object back", err)
	}
	if !bytes.Equal(got, body) {
		return fmt.Errorf("repository %s (%s): the test object read back differs from what was written (%d bytes, want %d)", r.Name, r.Store, len(got), len(body))
	}
	if err := r.Store.Delete(ctx, key); err != nil {
		return fail("deleting the test object", err)
	}
	return nil
}
