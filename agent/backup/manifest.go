package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// Backup types.
const (
	TypeFull = "full"
	TypeDiff = "diff"
	TypeIncr = "incr"
)

// File storage kinds.
const (
	KindFull  = "full"  // the whole file is in Object
	KindDelta = "delta" // changed pages are in Object (or none); the rest comes from the parent chain
)

// ManifestFormat is the manifest's format version.
const ManifestFormat = 1

// Manifest describes one base backup completely.
type Manifest struct {
	Format int    `json:"format"`
	ID     string `json:"id"`
	Type   string `json:"type"`
	Parent string `json:"parent,omitempty"`
	// TypeReason says why the backup is full when another type was asked
	// for (no parent complete in every repository, a parent ending after
	// this backup's start, another timeline).
	TypeReason string `json:"type_reason,omitempty"`
	Label      string `json:"label"`
	// Tier names the backup policy tier the backup was taken for ("" when
	// taken outside one); retention rules apply per tier (agent/expire).
	Tier             string        `json:"tier,omitempty"`
	Cluster          string        `json:"cluster"`
	Node             string        `json:"node"`
	SystemIdentifier uint64        `json:"system_identifier,string"`
	PGVersion        int           `json:"pg_version"`
	FromStandby      bool          `json:"from_standby"`
	DataChecksums    bool          `json:"data_checksums"`
	SegmentSize      uint64        `json:"wal_segment_size"`
	StartTime        time.Time     `json:"start_time"`
	StopTime         time.Time     `json:"stop_time"`
	StartLSN         wal.LSN       `json:"start_lsn"`
	StopLSN          wal.LSN       `json:"stop_lsn"`
	Timeline         uint32        `json:"timeline"`
	WALStart         string        `json:"wal_start"`
	WALStop          string        `json:"wal_stop"`
	BackupLabel      []byte        `json:"backup_label"`
	TablespaceMap    []byte        `json:"tablespace_map,omitempty"`
	Tablespaces      []Tablespace  `json:"tablespaces,omitempty"`
	Dirs             []Dir         `json:"dirs"`
	Files            []File        `json:"files"`
	CorruptPages     []CorruptPage `json:"corrupt_pages,omitempty"`
	DatabaseBytes    int64         `json:"database_bytes"`
	StoredBytes      int64         `json:"stored_bytes"`
	DurationSeconds  float64       `json:"duration_seconds"`
	// Signed is set by LoadManifest when the manifest carried a signature
	// the repository's Verifier checked: what it says then comes from a
	// holder of a trusted signing key, not merely from whoever can write
	// the repository (docs/security.md). Never stored.
	Signed bool `json:"-"`
}

// Tablespace is a pg_tblspc link.
type Tablespace struct {
	OID      string `json:"oid"`
	Name     string `json:"name,omitempty"` // pg_tablespace.spcname (absent in manifests of older pgdr)
	Location string `json:"location"`
}

// Dir is a directory to create at restore.
type Dir struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

// File is one file of the data directory as this backup holds it.
type File struct {
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	Mode   uint32    `json:"mode"`
	MTime  time.Time `json:"mtime"`
	Kind   string    `json:"kind"`
	Object string    `json:"object,omitempty"` // key under the cluster, "" when nothing is stored (empty file, no changed page)
	SHA256 string    `json:"sha256,omitempty"` // of the object's plaintext, when written with SHA-256 (--checksum sha256, or pgdr before BLAKE3)
	BLAKE3 string    `json:"blake3,omitempty"` // of the object's plaintext, when written with BLAKE3 (the default)
	Stored int64     `json:"stored,omitempty"` // bytes stored in one repository
	Pages  int       `json:"pages,omitempty"`  // delta: pages stored
	// Refs are the backups whose objects build this file, oldest first:
	// for a whole copy this backup alone, for a delta the backup holding
	// the newest whole copy and those holding changed pages since (an
	// unchanged file names only older backups).
	Refs []string `json:"refs,omitempty"`
	// Parts replace Object for a file larger than PartSize: each part
	// holds the file's bytes from Offset (a whole copy) or its changed
	// pages in that range (a delta). Parts with nothing stored are absent.
	Parts []Part `json:"parts,omitempty"`
}

// Part is one stored part of a large file.
type Part struct {
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"` // bytes of the file read for this part
	Object string `json:"object"`
	// The checksum of the object's plaintext, with the hash the object
	// was written with: BLAKE3 (the default), or SHA-256 (--checksum
	// sha256, and every backup of pgdr before BLAKE3). Exactly one is set.
	SHA256 string `json:"sha256,omitempty"`
	BLAKE3 string `json:"blake3,omitempty"`
	Stored int64  `json:"stored"`
}

// Checksum is the hash the manifest records the part's plaintext with.
func (p Part) Checksum() objstream.Checksum {
	alg, _ := p.recorded()
	return alg
}

// recorded is the recorded checksum: its hash and its hex value.
func (p Part) recorded() (objstream.Checksum, string) {
	if p.BLAKE3 != "" {
		return objstream.ChecksumBLAKE3, p.BLAKE3
	}
	return objstream.ChecksumSHA256, p.SHA256
}

// setSum records a checksum of the object's plaintext.
func (p *Part) setSum(s objstream.Sum) {
	p.SHA256, p.BLAKE3 = "", ""
	if s.Alg == objstream.ChecksumBLAKE3 {
		p.BLAKE3 = s.Hex()
	} else {
		p.SHA256 = s.Hex()
	}
}

// CheckSum compares the checksum a reader verified for the object with
// the one the manifest records: an object whose trailer is intact but is
// not the object the manifest names (or is hashed differently) fails.
func (p Part) CheckSum(got objstream.Sum) error {
	alg, want := p.recorded()
	if got.Alg != alg || got.Hex() != want {
		return fmt.Errorf("content checksum %s, manifest says %s:%s: %w", got, alg, want, objstream.ErrCorrupt)
	}
	return nil
}

// Objects lists the objects holding this file's data in this backup, with
// their checksums: the single Object, or every part.
func (f File) Objects() []Part {
	if f.Object != "" {
		return []Part{{Offset: 0, Size: f.Size, Object: f.Object, SHA256: f.SHA256, BLAKE3: f.BLAKE3, Stored: f.Stored}}
	}
	return f.Parts
}

// CorruptPage is a page whose checksum failed (twice) during the backup.
type CorruptPage struct {
	Path  string `json:"path"`
	Block uint32 `json:"block"`
	Error string `json:"error"`
}

var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}[FDI]$`)

// ValidID reports whether id has the form of a backup ID (20261126T081700F).
func ValidID(id string) bool { return idRE.MatchString(id) }

func backupPrefix(cluster string) string { return cluster + "/backup/" }

// Prefix is the key prefix of every backup of cluster: a backup's objects
// are under Prefix + ID + "/", its ID's reservations under Prefix +
// the ID's stamp + ".reserved/".
func Prefix(cluster string) string { return backupPrefix(cluster) }

// ManifestKey is the key of backup id's manifest: the object that makes
// the backup exist.
func ManifestKey(cluster, id string) string { return manifestKey(cluster, id) }

// ReservedSuffix ends the key segment of a backup ID's reservations
// (<stamp>.reserved/<random>) while the backup runs.
const ReservedSuffix = ".reserved"

// SaveManifest writes m as backup m.ID's manifest to r, signed by signer
// when it is not nil. Take writes manifests itself; this is for tools and
// tests that build a repository.
func SaveManifest(ctx context.Context, r repo.Repo, m *Manifest, signer *objstream.Signer) error {
	return saveManifest(ctx, r, m, signer)
}

func manifestKey(cluster, id string) string {
	return backupPrefix(cluster) + id + "/backup.manifest"
}

func objectKey(cluster, id, path string) string {
	return backupPrefix(cluster) + id + "/pgdata/" + path
}

// ErrNoBackup means the backup does not exist (no manifest).
var ErrNoBackup = errors.New("no such backup")

// LoadManifest reads and verifies one backup's manifest.
func LoadManifest(ctx context.Context, r repo.Repo, cluster, id string) (*Manifest, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%q is not a backup ID (like 20261126T081700F)", id)
	}
	key := manifestKey(cluster, id)
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("backup %s in repository %s: %w", id, r.Name, ErrNoBackup)
		}
		return nil, fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	// A manifest is not encrypted (see the package comment); its
	// signature, when signing is configured, authenticates it and through
	// its checksums every data object it lists.
	or, err := objstream.NewReaderOpts(rc, r.SignedReadOptions(key, nil, false))
	if err != nil {
		return nil, fmt.Errorf("repository %s: manifest %s: %w", r.Name, key, err)
	}
	defer or.Close()
	b, err := io.ReadAll(or)
	if err != nil {
		return nil, fmt.Errorf("repository %s: manifest %s: %w", r.Name, key, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("repository %s: manifest %s: %w", r.Name, key, err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("repository %s: manifest %s has format %d, this pgdr reads %d", r.Name, key, m.Format, ManifestFormat)
	}
	// Read to io.EOF, so the plaintext matched the signed header.
	m.Signed = r.Verifier != nil && or.Header.Signature != nil
	return &m, nil
}

// ManifestHeader is a manifest without its lists of files, directories
// and tablespaces: what retention needs of every backup.
type ManifestHeader struct {
	Format      int       `json:"format"`
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Parent      string    `json:"parent,omitempty"`
	Tier        string    `json:"tier,omitempty"`
	Cluster     string    `json:"cluster"`
	SegmentSize uint64    `json:"wal_segment_size"`
	StartTime   time.Time `json:"start_time"`
	StopTime    time.Time `json:"stop_time"`
	StartLSN    wal.LSN   `json:"start_lsn"`
	StopLSN     wal.LSN   `json:"stop_lsn"`
	Timeline    uint32    `json:"timeline"`
	// Signed: as Manifest.Signed.
	Signed bool `json:"-"`
}

// LoadManifestHeader reads backup id's manifest as LoadManifest does
// (the signature checked over all of it) but keeps only its header.
func LoadManifestHeader(ctx context.Context, r repo.Repo, cluster, id string) (*ManifestHeader, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%q is not a backup ID (like 20261126T081700F)", id)
	}
	key := manifestKey(cluster, id)
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("backup %s in repository %s: %w", id, r.Name, ErrNoBackup)
		}
		return nil, fmt.Errorf("repository %s: %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	or, err := objstream.NewReaderOpts(rc, r.SignedReadOptions(key, nil, false))
	if err != nil {
		return nil, fmt.Errorf("repository %s: manifest %s: %w", r.Name, key, err)
	}
	defer or.Close()
	var m ManifestHeader
	if err := decodeHeader(or, &m); err != nil {
		return nil, fmt.Errorf("repository %s: manifest %s: %w", r.Name, key, err)
	}
	// Read to io.EOF, so the plaintext matched the signed header.
	if _, err := io.Copy(io.Discard, or); err != nil {
		return nil, fmt.Errorf("repository %s: manifest %s: %w", r.Name, key, err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("repository %s: manifest %s has format %d, this pgdr reads %d", r.Name, key, m.Format, ManifestFormat)
	}
	m.Signed = r.Verifier != nil && or.Header.Signature != nil
	return &m, nil
}

// saveManifest writes the manifest (compressed, checksummed, not
// encrypted: see the package comment) to one repository, signed by signer
// when it is not nil.
func saveManifest(ctx context.Context, r repo.Repo, m *Manifest, signer *objstream.Signer) error {
	body, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	key := manifestKey(m.Cluster, m.ID)
	sum := sha256.Sum256(body)
	var buf bytes.Buffer
	w, err := objstream.NewWriter(&buf, objstream.Options{Compression: objstream.CompressionZstd, Unencrypted: true,
		PlainSize: int64(len(body)), PlainSHA256: sum[:], Signer: signer, Name: key})
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := r.Store.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		return fmt.Errorf("repository %s: writing manifest: %w", r.Name, err)
	}
	return nil
}

// Damaged is a backup whose manifest exists but cannot be read.
type Damaged struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// List returns the manifests of every complete backup in r, oldest first.
// Backups without a manifest (in progress or abandoned) are not listed, nor
// are those whose manifest cannot be read (see ListAll).
func List(ctx context.Context, r repo.Repo, cluster string) ([]*Manifest, error) {
	ms, _, err := ListAll(ctx, r, cluster)
	return ms, err
}

// ListAll is List that also reports the backups whose manifest is damaged,
// so one bad object neither hides the others nor goes unnoticed.
func ListAll(ctx context.Context, r repo.Repo, cluster string) ([]*Manifest, []Damaged, error) {
	var ids []string
	err := r.Store.List(ctx, backupPrefix(cluster), func(oi storage.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Key, backupPrefix(cluster))
		if id, ok := strings.CutSuffix(rest, "/backup.manifest"); ok && ValidID(id) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing backups in repository %s: %w", r.Name, err)
	}
	sort.Strings(ids)
	out := make([]*Manifest, 0, len(ids))
	var damaged []Damaged
	for _, id := range ids {
		m, err := LoadManifest(ctx, r, cluster, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			damaged = append(damaged, Damaged{ID: id, Error: err.Error()})
			continue
		}
		out = append(out, m)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartTime.Before(out[j].StartTime) })
	return out, damaged, nil
}

// Chain returns the manifests from the full backup to id, oldest first.
func Chain(ctx context.Context, r repo.Repo, cluster, id string) ([]*Manifest, error) {
	var chain []*Manifest
	for cur := id; cur != ""; {
		m, err := LoadManifest(ctx, r, cluster, cur)
		if err != nil {
			if len(chain) > 0 {
				return nil, fmt.Errorf("backup %s depends on %s: %w", chain[len(chain)-1].ID, cur, err)
			}
			return nil, err
		}
		chain = append([]*Manifest{m}, chain...)
		if len(chain) > 1000 {
			return nil, fmt.Errorf("backup %s: parent chain too long (a loop?)", id)
		}
		cur = m.Parent
	}
	if chain[0].Type != TypeFull {
		return nil, fmt.Errorf("backup %s: chain does not start with a full backup", id)
	}
	return chain, nil
}

// Resolve turns "latest" or an ID into a backup ID present in r.
func Resolve(ctx context.Context, r repo.Repo, cluster, id string) (string, error) {
	if id != "latest" {
		if _, err := LoadManifest(ctx, r, cluster, id); err != nil {
			return "", err
		}
		return id, nil
	}
	ms, err := List(ctx, r, cluster)
	if err != nil {
		return "", err
	}
	if len(ms) == 0 {
		return "", fmt.Errorf("repository %s has no backup of cluster %s: %w", r.Name, cluster, ErrNoBackup)
	}
	return ms[len(ms)-1].ID, nil
}

// maxManifestToken bounds one JSON token (a string, a number) of a
// manifest read by decodeHeader: the longest a manifest holds are paths,
// checksums and the backup label, far below it.
const maxManifestToken = 1 << 20

// maxManifestDepth bounds the nesting of a manifest's JSON (a manifest
// nests three deep).
const maxManifestDepth = 32

// headerFields are the JSON names of ManifestHeader's fields.
var headerFields = map[string]bool{"format": true, "id": true, "type": true, "parent": true, "tier": true, "cluster": true,
	"wal_segment_size": true, "start_time": true, "stop_time": true, "start_lsn": true, "stop_lsn": true, "timeline": true}

// decodeHeader decodes the header fields of the manifest JSON object r
// holds into m, token by token: memory stays bounded by the longest token
// (maxManifestToken), whatever the size of the lists it skips. (Decoding
// into m with a json.Decoder holds the whole object: an unsigned manifest
// of a few KiB of zstd can decode to GiBs.)
func decodeHeader(r io.Reader, m *ManifestHeader) error {
	lr := &tokenLimitReader{r: r}
	dec := json.NewDecoder(lr)
	lr.dec = dec
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		// encoding/json matches names without regard to case.
		if lower := strings.ToLower(name); headerFields[lower] {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return err
			}
			fields[lower] = v
			continue
		}
		if err := skipJSONValue(dec); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return err
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, m)
}

// skipJSONValue reads the next value from dec, token by token.
func skipJSONValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if depth++; depth > maxManifestDepth {
					return fmt.Errorf("JSON nested more than %d deep", maxManifestDepth)
				}
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// tokenLimitReader refuses to read on when dec holds more than
// maxManifestToken bytes it has not yet decoded: a token that long.
type tokenLimitReader struct {
	r    io.Reader
	dec  *json.Decoder
	read int64
}

func (l *tokenLimitReader) Read(p []byte) (int, error) {
	if l.read-l.dec.InputOffset() > maxManifestToken {
		return 0, fmt.Errorf("a JSON token longer than %d bytes", maxManifestToken)
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}
