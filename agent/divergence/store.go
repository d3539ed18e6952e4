package divergence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/divergenceid"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// NewID is the id of a report node makes at t.
func NewID(node string, t time.Time) string { return divergenceid.New(node, t) }

// ErrBadID is returned for an id that is not a report id.
var ErrBadID = divergenceid.ErrBad

// CheckID returns an error wrapping ErrBadID when id is not a report id.
func CheckID(id string) error { return divergenceid.Check(id) }

// ErrNotFound: no repository holds the report.
var ErrNotFound = errors.New("divergence report not found")

// Store writes the raw WAL segments of r (r.Segments, read from pgwal)
// and then the report itself to every repository of cfg, each object
// compressed, encrypted and signed under its key like a WAL object. It
// sets r.Stored (nil error) before writing the report. A segment missing
// from pgwal (the last one of the range may be, when the WAL ended at a
// segment boundary) is skipped. The segments get three quarters of ctx's
// time; when one cannot be stored the rest are not tried, and the report
// is stored with those stored (r.Segments) and r.StoreError saying so.
func Store(ctx context.Context, cfg *config.Config, log *slog.Logger, r *Report, pgwal string) error {
	if err := CheckID(r.ID); err != nil {
		return err
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return err
	}
	if len(repos) == 0 {
		return errors.New("no repositories configured")
	}
	rcpts, err := keys.Recipients(cfg)
	if err != nil {
		return err
	}
	signer, err := keys.Signer(cfg)
	if err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	put := func(ctx context.Context, key string, data []byte) error {
		sum := sha256.Sum256(data)
		opts := keys.StreamOptions(cfg, rcpts)
		opts.PlainSize, opts.PlainSHA256, opts.TrustSHA256 = int64(len(data)), sum[:], true
		opts.Signer, opts.Name = signer, key
		var enc bytes.Buffer
		w, err := objstream.NewWriter(&enc, opts)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		g, gctx := errgroup.WithContext(ctx)
		for _, rp := range repos {
			g.Go(func() error {
				err := rp.Store.Put(gctx, key, bytes.NewReader(enc.Bytes()), int64(enc.Len()))
				if err != nil && rp.Async {
					log.Warn("divergence report: an async repository failed", "repo", rp.Name, "key", key, "err", err)
					return nil
				}
				if err != nil {
					return fmt.Errorf("%s: %s: %w", rp.Name, key, err)
				}
				return nil
			})
		}
		return g.Wait()
	}
	// The segments get three quarters of the time left: the report itself
	// is stored whatever became of them.
	segCtx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		segCtx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)*3/4))
		defer cancel()
	}
	var stored []string
	var segErr error
	for _, name := range r.Segments {
		data, err := os.ReadFile(filepath.Join(pgwal, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			segErr = fmt.Errorf("reading WAL segment %s: %w", name, err)
			break
		}
		if err := put(segCtx, repo.DivergenceWALKey(r.Cluster, r.ID, name), data); err != nil {
			segErr = fmt.Errorf("storing WAL segment %s: %w", name, err)
			break
		}
		stored = append(stored, name)
	}
	r.Segments, r.Stored, r.StoreError = stored, true, ""
	if segErr != nil {
		r.StoreError = fmt.Sprintf("the report is stored with %d of its WAL segments, the others not: %v", len(stored), segErr)
		log.Warn("divergence report: WAL segments not all stored", "id", r.ID, "err", segErr)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := put(ctx, repo.DivergenceReportKey(r.Cluster, r.ID), js); err != nil {
		r.Stored = false
		return errors.Join(fmt.Errorf("storing the report: %w", err), segErr)
	}
	return nil
}

// Load reads report id of cfg's cluster from the first repository that
// holds it, verifying it as a WAL object is verified (decrypted with
// encryption.identity_file, its signature checked when signing is
// configured).
func Load(ctx context.Context, cfg *config.Config, id string) (*Report, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	repos, err := repo.OpenAll(ctx, cfg)
	if err != nil {
		return nil, err
	}
	idents, err := keys.Identities(cfg)
	if err != nil {
		return nil, err
	}
	key := repo.DivergenceReportKey(cfg.Cluster, id)
	var errs []error
	for _, rp := range repos {
		rc, err := rp.Store.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rp.Name, err))
			continue
		}
		r, err := func() (*Report, error) {
			defer rc.Close()
			or, err := objstream.NewReaderOpts(rc, rp.SignedReadOptions(key, idents, true))
			if err != nil {
				return nil, err
			}
			defer or.Close()
			b, err := io.ReadAll(or)
			if err != nil {
				return nil, err
			}
			var r Report
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("decoding: %w", err)
			}
			return &r, nil
		}()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", rp.Name, key, err))
			continue
		}
		return r, nil
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, fmt.Errorf("%w: %s in no repository of cluster %s", ErrNotFound, id, cfg.Cluster)
}
