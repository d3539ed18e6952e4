package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
	"github.com/pgdr/pgdr/pkg/storage/s3store"
)

// Repo is one opened repository.
type Repo struct {
	Name  string
	Store storage.ObjectStore
	// RequireEncrypted refuses unencrypted objects where encrypted ones
	// are expected (WAL, backup data): set by OpenAll when encryption is
	// configured.
	RequireEncrypted bool
	// Verifier checks the signatures of manifests and WAL objects; nil
	// when signing is not configured. Set by OpenAll.
	Verifier *objstream.Verifier
	// Async marks a repository of mode async: writers leave it to the
	// daemon's copier (agent/repocopy); readers use it like any other.
	Async bool
}

// Sync returns the repositories of rs that writers write to (mode sync),
// in order.
func Sync(rs []Repo) []Repo {
	var out []Repo
	for _, r := range rs {
		if !r.Async {
			out = append(out, r)
		}
	}
	return out
}

// Async returns the repositories of rs of mode async, in order.
func Async(rs []Repo) []Repo {
	var out []Repo
	for _, r := range rs {
		if r.Async {
			out = append(out, r)
		}
	}
	return out
}

// SignedReadOptions are the options for reading an object that writers
// sign (a WAL object; a manifest, with encrypted false) stored under key.
func (r Repo) SignedReadOptions(key string, ids []age.Identity, encrypted bool) objstream.ReadOptions {
	return objstream.ReadOptions{Identities: ids, RequireEncrypted: encrypted && r.RequireEncrypted, Verifier: r.Verifier, Name: key}
}

// DataReadOptions are the options for reading a backup data object stored
// under key: not signed itself, it is authenticated by the checksum the
// signed manifest records for it.
func (r Repo) DataReadOptions(key string, ids []age.Identity) objstream.ReadOptions {
	return objstream.ReadOptions{Identities: ids, RequireEncrypted: r.RequireEncrypted, Name: key}
}

// Open opens one configured repository.
func Open(ctx context.Context, r config.Repo) (Repo, error) {
	u, err := url.Parse(r.URL)
	if err != nil {
		return Repo{}, fmt.Errorf("repository %s: %w", r.Name, err)
	}
	switch u.Scheme {
	case "file":
		st, err := filestore.New(u.Path)
		if err != nil {
			return Repo{}, fmt.Errorf("repository %s: %w", r.Name, err)
		}
		return Repo{Name: r.Name, Store: st}, nil
	case "s3":
		opts := s3store.Options{
			Bucket: u.Host,
			Prefix: strings.Trim(u.Path, "/"),
		}
		if s := r.S3; s != nil {
			opts.Endpoint, opts.Region, opts.PathStyle = s.Endpoint, s.Region, s.PathStyle
			opts.PartSize = int64(s.PartSizeMB) << 20
			opts.MaxAttempts = s.MaxAttempts
			if s.AccessKeyIDFile != "" {
				if opts.AccessKeyID, err = config.ReadSecretFile(s.AccessKeyIDFile); err != nil {
					return Repo{}, fmt.Errorf("repository %s: access_key_id_file: %w", r.Name, err)
				}
				if opts.SecretAccessKey, err = config.ReadSecretFile(s.SecretAccessKeyFile); err != nil {
					return Repo{}, fmt.Errorf("repository %s: secret_access_key_file: %w", r.Name, err)
				}
			}
		}
		if opts.Region == "" {
			opts.Region = os.Getenv("AWS_REGION")
		}
		if opts.Region == "" {
			opts.Region = "us-east-1"
		}
		st, err := s3store.New(ctx, opts)
		if err != nil {
			return Repo{}, fmt.Errorf("repository %s: %w", r.Name, err)
		}
		return Repo{Name: r.Name, Store: st}, nil
	}
	return Repo{}, fmt.Errorf("repository %s: unknown scheme %q (file or s3)", r.Name, u.Scheme)
}

// OpenAll opens every configured repository, in configuration order.
func OpenAll(ctx context.Context, cfg *config.Config) ([]Repo, error) {
	out := make([]Repo, 0, len(cfg.Repos))
	v, err := keys.Verifier(cfg)
	if err != nil {
		return nil, err
	}
	for _, r := range cfg.Repos {
		o, err := Open(ctx, r)
		if err != nil {
			return nil, err
		}
		o.RequireEncrypted = !cfg.Encryption.Disabled
		o.Verifier = v
		o.Async = r.Async()
		out = append(out, o)
	}
	return out, nil
}

// WALPrefix is the key prefix of all archived WAL of a cluster.
func WALPrefix(cluster string) string { return cluster + "/wal/" }

// WALKey is the key of one archived WAL file.
func WALKey(cluster, name string) string {
	return WALPrefix(cluster) + name[:8] + "/" + name
}

// StreamPrefix is where the WAL receiver keeps the segment it is still
// receiving (agent/walrecv), outside WALPrefix: a partial segment is not
// archive, and PostgreSQL's own .partial files (the last segment of an old
// timeline, archived at promotion) keep their names in WALPrefix.
func StreamPrefix(cluster string) string { return cluster + "/wal-stream/" }

// StreamPartialKey is the key of the receiver's partial copy of segment
// name (a 24-hex-digit segment name): name + ".partial" under StreamPrefix.
// It is overwritten as more WAL arrives and deleted once the complete
// segment is archived under WALKey.
func StreamPartialKey(cluster, name string) string {
	return StreamPrefix(cluster) + name[:8] + "/" + name + ".partial"
}

// WALReplacedPrefix is where wal-repair keeps the archived WAL objects it
// replaced. It is outside WALPrefix, so nothing reads them as archive.
func WALReplacedPrefix(cluster string) string { return cluster + "/wal-replaced/" }

// WALReplacedKey is the key a replaced object of WAL file name is kept
// under; stamp (the replacement time) keeps repeated repairs apart.
func WALReplacedKey(cluster, name, stamp string) string {
	return WALReplacedPrefix(cluster) + name + "." + stamp
}

// ClusterInfo identifies the PostgreSQL cluster a repository belongs to.
type ClusterInfo struct {
	Cluster          string    `json:"cluster"`
	SystemIdentifier uint64    `json:"system_identifier,string"`
	Created          time.Time `json:"created"`
}

func clusterInfoKey(cluster string) string { return cluster + "/cluster.json" }

// ClusterInfoKey is the key of the cluster's record (see CheckClusterInfo).
func ClusterInfoKey(cluster string) string { return clusterInfoKey(cluster) }

// ErrNoClusterInfo means a repository does not hold the cluster's record
// (<cluster>/cluster.json, written by the first wal-push): it is not the
// repository configured (a file repository not mounted or moved, a wrong
// bucket or prefix), so its "not found" answers mean nothing.
var ErrNoClusterInfo = errors.New("repository does not hold this cluster")

// CheckClusterInfo returns nil when the repository holds the cluster's
// record, an error wrapping ErrNoClusterInfo when it does not, and the
// store's error when it cannot tell.
func CheckClusterInfo(ctx context.Context, r Repo, cluster string) error {
	key := clusterInfoKey(cluster)
	_, err := r.Store.Stat(ctx, key)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: repository %s (%s) has no %s (not mounted, moved, or the wrong location?)", ErrNoClusterInfo, r.Name, r.Store, key)
	default:
		return fmt.Errorf("repository %s (%s): %s: %w", r.Name, r.Store, key, err)
	}
}

// ErrWrongCluster means a repository holds another PostgreSQL cluster's data.
var ErrWrongCluster = errors.New("repository belongs to another PostgreSQL cluster")

// EnsureClusterInfo checks that the repository holds this system identifier's
// data, recording it on first use. A repository that already holds another
// cluster's WAL must never be mixed with this one's.
func EnsureClusterInfo(ctx context.Context, r Repo, cluster string, sysid uint64) error {
	key := clusterInfoKey(cluster)
	rc, err := r.Store.Get(ctx, key)
	switch {
	case err == nil:
		defer rc.Close()
		var info ClusterInfo
		if err := json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&info); err != nil {
			return fmt.Errorf("%s/%s: %w", r.Store, key, err)
		}
		if info.SystemIdentifier != sysid {
			return fmt.Errorf("%w: %s/%s records system identifier %d, this cluster's is %d (point the repository elsewhere or use another cluster name)", ErrWrongCluster, r.Store, key, info.SystemIdentifier, sysid)
		}
		return nil
	case errors.Is(err, storage.ErrNotFound):
		b, _ := json.MarshalIndent(ClusterInfo{Cluster: cluster, SystemIdentifier: sysid, Created: time.Now().UTC()}, "", "  ")
		if err := r.Store.Put(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
			return fmt.Errorf("recording the cluster in %s: %w", r.Store, err)
		}
		return nil
	default:
		return fmt.Errorf("%s/%s: %w", r.Store, key, err)
	}
}
