package walship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Repairer compares a local WAL file with what the repositories hold under
// its name and replaces a conflicting archived copy. Get one from
// Shipper.Repairer.
type Repairer struct {
	archive
	push func(ctx context.Context, path string) error // the Shipper's coalesced push
}

// Versions is what wal-repair shows: the local file and what every
// repository holds under its name.
type Versions struct {
	Name   string          `json:"name"`
	Local  LocalVersion    `json:"local"`
	Stored []StoredVersion `json:"stored"`
}

// LocalVersion describes the local file.
type LocalVersion struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Ready is how PostgreSQL marked it: "ready", "done", "not ready", or
	// "" outside a pg_wal directory.
	Ready string `json:"ready,omitempty"`
	// Problem says why the file could not be archived as it is (not a
	// whole segment of this cluster under this name); "" when it could.
	Problem string `json:"problem,omitempty"`
}

// StoredVersion describes what one repository holds under the name.
type StoredVersion struct {
	Repo    string `json:"repo"`
	URL     string `json:"url"`
	Key     string `json:"key"`
	Present bool   `json:"present"`
	// Size and SHA256 are the stored plaintext's, from the object's header.
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Stored is when the object was written.
	Stored      time.Time `json:"stored,omitzero"`
	StoredBytes int64     `json:"stored_bytes,omitempty"`
	// Same is true when the stored plaintext is the local file's.
	Same bool `json:"same"`
	// Error is why the stored object's header could not be read.
	Error string `json:"error,omitempty"`
}

// Conflicting lists the repositories whose stored object differs from the
// local file (or cannot be read): those Repair would replace.
func (v *Versions) Conflicting() []string {
	var out []string
	for _, sv := range v.Stored {
		if sv.Present && !sv.Same {
			out = append(out, sv.Repo)
		}
	}
	return out
}

// Inspect compares the local WAL file at path with what every repository
// holds under its name. It changes nothing.
func (rp *Repairer) Inspect(ctx context.Context, path string) (*Versions, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(abs)
	n, err := wal.ParseName(name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("wal-repair: %w", err)
	}
	sum := sha256.Sum256(data)
	v := &Versions{Name: name, Local: LocalVersion{
		Path: abs, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Ready: readyState(filepath.Dir(abs), name),
	}}
	if n.Kind == wal.KindSegment || n.Kind == wal.KindPartial {
		sysid, err := rp.sysid.get()
		if err != nil {
			return nil, err
		}
		if _, err := wal.CheckSegment(n, data, sysid); err != nil {
			v.Local.Problem = err.Error()
		}
	}
	key := repo.WALKey(rp.cfg.Cluster, name)
	for _, r := range rp.repos {
		sv, err := inspectStored(ctx, r, key, int64(len(data)), sum[:])
		if err != nil {
			return nil, err
		}
		v.Stored = append(v.Stored, sv)
	}
	return v, nil
}

func inspectStored(ctx context.Context, r repo.Repo, key string, size int64, sum []byte) (StoredVersion, error) {
	sv := StoredVersion{Repo: r.Name, URL: r.Store.String(), Key: key}
	oi, err := r.Store.Stat(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return sv, nil
	}
	if err != nil {
		return sv, fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	sv.Present, sv.StoredBytes, sv.Stored = true, oi.Size, oi.ModTime.UTC()
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return sv, fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	h, err := objstream.ReadHeader(rc)
	if err != nil {
		sv.Error = err.Error()
		return sv, nil
	}
	sv.Size, sv.SHA256 = h.PlainSize, hex.EncodeToString(h.PlainSHA256)
	if !h.Created.IsZero() {
		sv.Stored = h.Created.UTC()
	}
	sv.Same = h.PlainSize == size && bytes.Equal(h.PlainSHA256, sum)
	return sv, nil
}

// Replaced is one stored object Repair replaced.
type Replaced struct {
	Repo string `json:"repo"`
	Key  string `json:"key"`
	// KeptAs is where the replaced object was copied before it was
	// removed (under <cluster>/wal-replaced/).
	KeptAs string `json:"kept_as"`
}

// Repair replaces, in every repository whose object under the file's name
// differs from the local file at path, the stored object with the local
// file, and pushes it where it is missing. It is for the operator who has
// confirmed that the stored copy was never complete (a hand push of the
// segment PostgreSQL was still writing). The local file must be one wal-push
// accepts (a whole segment of this cluster under this name) and, unless
// force, marked ready or done by PostgreSQL; otherwise nothing changes.
// Each replaced object is first copied to <cluster>/wal-replaced/<name>.<time>.
func (rp *Repairer) Repair(ctx context.Context, path string, force bool) ([]Replaced, error) {
	v, err := rp.Inspect(ctx, path)
	if err != nil {
		return nil, err
	}
	if v.Local.Problem != "" {
		return nil, fmt.Errorf("wal-repair: the local file cannot replace the stored one: %s", v.Local.Problem)
	}
	if !force {
		if err := checkReady(filepath.Dir(v.Local.Path), v.Name); err != nil {
			return nil, fmt.Errorf("wal-repair: the local file cannot replace the stored one: %w", err)
		}
	}
	stamp := time.Now().UTC().Format("20060102T150405.000000000Z")
	var done []Replaced
	for i, sv := range v.Stored {
		if !sv.Present || sv.Same {
			continue
		}
		r := rp.repos[i]
		kept := repo.WALReplacedKey(rp.cfg.Cluster, v.Name, stamp)
		if err := copyObject(ctx, r, sv.Key, kept); err != nil {
			return done, err
		}
		if err := r.Store.Delete(ctx, sv.Key); err != nil {
			return done, fmt.Errorf("repository %s: removing %s (kept as %s): %w", r.Name, sv.Key, kept, err)
		}
		done = append(done, Replaced{Repo: r.Name, Key: sv.Key, KeptAs: kept})
		rp.log.Warn("replaced a conflicting archived WAL file", "file", v.Name, "repo", r.Name, "kept_as", kept,
			"stored_sha256", sv.SHA256, "local_sha256", v.Local.SHA256)
	}
	if len(done) == 0 {
		return nil, nil
	}
	if err := rp.push(ctx, v.Local.Path); err != nil {
		return done, fmt.Errorf("wal-repair: the conflicting objects were removed (kept under %s) but pushing the local file failed; run wal-push on it again: %w",
			repo.WALReplacedPrefix(rp.cfg.Cluster), err)
	}
	return done, nil
}

// copyObject copies the stored object at from to to, unchanged.
func copyObject(ctx context.Context, r repo.Repo, from, to string) error {
	oi, err := r.Store.Stat(ctx, from)
	if err != nil {
		return fmt.Errorf("repository %s: %s: %w", r.Name, from, err)
	}
	rc, err := r.Store.Get(ctx, from)
	if err != nil {
		return fmt.Errorf("repository %s: %s: %w", r.Name, from, err)
	}
	defer rc.Close()
	if err := r.Store.Put(ctx, to, rc, oi.Size); err != nil {
		return fmt.Errorf("repository %s: keeping %s as %s: %w", r.Name, from, to, err)
	}
	return nil
}
