package walship

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// This file serves recovery the WAL receiver's partial copy of a segment
// (repo.StreamPartialKey, uploaded by PushPartial) when the segment is not
// in the archive: the WAL between the last archived segment and the
// moment the primary's region was lost.
//
// Only a partial of the archive's newest timeline is ever served. After a
// failover the old timeline's WAL past the branch point is the old
// primary's, lost with it (the new primary never had it), and a partial
// of the old timeline may hold exactly that: replaying it would bring
// back writes the cluster no longer has, on a history it no longer
// follows. The newest timeline is the highest one with a history file in
// the archive (1 when none); a partial of a timeline with anything later
// (archived WAL of a later timeline, with or without its history, or a
// partial of one) is refused too.
//
// PostgreSQL refuses a restored segment of the wrong size, so the partial
// is padded with zeros to the segment size: replay reads the zeros as the
// end of WAL and recovery ends there.

// PartialUse describes the WAL a stream partial gives recovery beyond the
// archive: the first Bytes bytes of segment Segment, LSN FromLSN to ToLSN
// on timeline Timeline.
type PartialUse struct {
	Segment     string    `json:"segment"`
	Timeline    uint32    `json:"timeline"`
	Bytes       int64     `json:"bytes"`
	FromLSN     wal.LSN   `json:"from_lsn"`
	ToLSN       wal.LSN   `json:"to_lsn"`
	SegmentSize int64     `json:"segment_size"`
	Repo        string    `json:"repo"`
	SHA256      string    `json:"sha256"`
	Served      time.Time `json:"served,omitzero"`
}

// String says what the partial holds, for logs and reports.
func (u PartialUse) String() string {
	return fmt.Sprintf("stream partial of segment %s (timeline %d): %d bytes of WAL, %s to %s, from repository %s",
		u.Segment, u.Timeline, u.Bytes, u.FromLSN, u.ToLSN, u.Repo)
}

// Partial is a verified stream partial: its plaintext and what it holds.
type Partial struct {
	Data []byte
	Use  PartialUse
}

// NewestTimeline is the archive's newest timeline: the highest one with a
// history file, 1 when there is none.
func NewestTimeline(histories []uint32) uint32 {
	newest := uint32(1)
	for _, t := range histories {
		newest = max(newest, t)
	}
	return newest
}

// TimelineView is what the repositories show of the cluster's timelines:
// those with a history file in the archive, those with any archived file,
// and those the receiver holds partial segments of.
type TimelineView struct {
	Histories []uint32
	Archived  []uint32
	Streamed  []uint32
}

// PartialRefusal says why the stream partial of a segment on timeline tli
// must not be used, or "" when it may: tli is the archive's newest
// timeline and nothing of a later one exists.
func PartialRefusal(tli uint32, v TimelineView) string {
	newest := NewestTimeline(v.Histories)
	switch {
	case tli < newest:
		return fmt.Sprintf("timeline %d is not the newest: the archive holds the history file of timeline %d, so WAL of timeline %d past its branch point is a lost primary's", tli, newest, tli)
	case tli > newest:
		return fmt.Sprintf("timeline %d has no history file in the archive: whether it is the cluster's newest cannot be told", tli)
	}
	for _, t := range v.Archived {
		if t > tli {
			return fmt.Sprintf("the archive holds WAL of timeline %d, later than %d (without its history file)", t, tli)
		}
	}
	for _, t := range v.Streamed {
		if t > tli {
			return fmt.Sprintf("the receiver holds WAL of timeline %d, later than %d", t, tli)
		}
	}
	return ""
}

// ScanTimelines reads the TimelineView of cluster in the repositories:
// the timeline directories of the archive and of the stream prefix, and a
// history file looked for in each archive timeline directory. A sync
// repository that cannot be read is an error (the view would be
// incomplete); an async one is logged and left out when a sync one was
// read (every archived file reaches every sync repository).
func ScanTimelines(ctx context.Context, repos []repo.Repo, cluster string, log *slog.Logger) (TimelineView, error) {
	var v TimelineView
	syncRead := len(repo.Sync(repos)) > 0
	for _, r := range append(repo.Sync(repos), repo.Async(repos)...) {
		rv, err := scanRepo(ctx, r, cluster)
		if err != nil && r.Async && syncRead {
			log.Warn("timelines read without the async repository, which cannot be read now", "repo", r.Name, "err", err)
			continue
		}
		if err != nil {
			return TimelineView{}, fmt.Errorf("repository %s: reading the cluster's timelines: %w", r.Name, err)
		}
		v.Histories = append(v.Histories, rv.Histories...)
		v.Archived = append(v.Archived, rv.Archived...)
		v.Streamed = append(v.Streamed, rv.Streamed...)
	}
	for _, s := range []*[]uint32{&v.Histories, &v.Archived, &v.Streamed} {
		slices.Sort(*s)
		*s = slices.Compact(*s)
	}
	return v, nil
}

func scanRepo(ctx context.Context, r repo.Repo, cluster string) (TimelineView, error) {
	var v TimelineView
	archived, err := timelineDirs(ctx, r.Store, repo.WALPrefix(cluster))
	if err != nil {
		return v, err
	}
	v.Archived = archived
	for _, t := range archived {
		_, err := r.Store.Stat(ctx, repo.WALKey(cluster, wal.HistoryFileName(t)))
		switch {
		case err == nil:
			v.Histories = append(v.Histories, t)
		case !errors.Is(err, storage.ErrNotFound):
			return v, err
		}
	}
	v.Streamed, err = timelineDirs(ctx, r.Store, repo.StreamPrefix(cluster))
	return v, err
}

// timelineDirs lists the timelines under prefix, whose keys are
// <prefix><8 hex digits of the timeline>/<file>: one directory listing
// where the store has one, else the whole prefix.
func timelineDirs(ctx context.Context, st storage.ObjectStore, prefix string) ([]uint32, error) {
	var dirs []string
	if dl, ok := st.(storage.DirLister); ok {
		d, err := dl.ListDirs(ctx, prefix)
		if err != nil {
			return nil, err
		}
		dirs = d
	} else {
		err := st.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			if d, _, ok := strings.Cut(strings.TrimPrefix(oi.Key, prefix), "/"); ok {
				dirs = append(dirs, d)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	var out []uint32
	for _, d := range dirs {
		t, err := strconv.ParseUint(d, 16, 32)
		if len(d) != 8 || err != nil || t == 0 {
			continue
		}
		out = append(out, uint32(t))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// maxSegmentSize is PostgreSQL's largest wal_segment_size.
const maxSegmentSize = 1 << 30

// readPartial reads the stream partial of segment name from r and
// verifies it: signed under its key (when signing is configured), its
// plaintext size and SHA-256, a segment header whose page address is the
// name's, and shorter than a segment. A missing object wraps
// storage.ErrNotFound.
func readPartial(ctx context.Context, pool *objstream.Pool, r repo.Repo, cluster string, n wal.Name, ids []age.Identity) (*Partial, error) {
	key := repo.StreamPartialKey(cluster, n.Raw)
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("repository %s: reading %s: %w", r.Name, key, err)
	}
	defer rc.Close()
	or, err := pool.NewReaderOpts(rc, r.SignedReadOptions(key, ids, true))
	if err != nil {
		return nil, fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	defer or.Close()
	data, err := io.ReadAll(io.LimitReader(or, maxSegmentSize+1))
	if err != nil {
		return nil, fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	if len(data) > maxSegmentSize {
		return nil, fmt.Errorf("repository %s: object %s holds more than %d bytes: not a partial segment", r.Name, key, maxSegmentSize)
	}
	pn, _ := wal.ParseName(n.Raw + ".partial")
	h, err := wal.CheckSegment(pn, data, 0)
	if err != nil {
		return nil, fmt.Errorf("repository %s: object %s: %w", r.Name, key, err)
	}
	if int64(len(data)) >= int64(h.SegmentSize) {
		return nil, fmt.Errorf("repository %s: object %s holds %d bytes, a whole segment (%d) or more: not a partial", r.Name, key, len(data), h.SegmentSize)
	}
	sum := sha256.Sum256(data)
	from := wal.LSN(n.SegNo(uint64(h.SegmentSize)) * uint64(h.SegmentSize))
	return &Partial{Data: data, Use: PartialUse{Segment: n.Raw, Timeline: n.Timeline, Bytes: int64(len(data)),
		FromLSN: from, ToLSN: from + wal.LSN(len(data)), SegmentSize: int64(h.SegmentSize), Repo: r.Name,
		SHA256: hex.EncodeToString(sum[:])}}, nil
}

// LoadPartial reads the stream partial of segment name from every
// repository holding it and returns the longest copy that verifies (the
// receiver uploads to every repository; one may hold an older, shorter
// copy), or nil when none holds one. A copy that fails verification is an
// error unless another copy verifies (then it is logged): a forged or
// damaged partial never reads as "no partial".
func LoadPartial(ctx context.Context, repos []repo.Repo, cluster, name string, ids []age.Identity, log *slog.Logger) (*Partial, error) {
	n, err := wal.ParseName(name)
	if err != nil {
		return nil, err
	}
	if n.Kind != wal.KindSegment {
		return nil, fmt.Errorf("%q is not a segment name", name)
	}
	var pool objstream.Pool
	var best *Partial
	var errs []error
	for _, r := range append(repo.Sync(repos), repo.Async(repos)...) {
		p, err := readPartial(ctx, &pool, r, cluster, n, ids)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			errs = append(errs, err)
		case best == nil || p.Use.Bytes > best.Use.Bytes:
			best = p
		}
	}
	if best == nil {
		if len(errs) > 0 {
			return nil, fmt.Errorf("the stream partial of %s: %w", name, errors.Join(errs...))
		}
		return nil, nil
	}
	if len(errs) > 0 {
		log.Warn("a copy of the stream partial failed verification; using another", "file", name, "repo", best.Use.Repo, "errors", errors.Join(errs...))
	}
	return best, nil
}

// Padded returns data, the first bytes of a segment, followed by zeros up
// to segSize: the file PostgreSQL takes from restore_command (a file of
// another size is refused) and whose zeros it reads as the end of WAL.
func Padded(data []byte, segSize int64) ([]byte, error) {
	if segSize <= 0 || segSize&(segSize-1) != 0 || segSize > maxSegmentSize {
		return nil, fmt.Errorf("padding a partial segment: %d is not a segment size", segSize)
	}
	if int64(len(data)) >= segSize {
		return nil, fmt.Errorf("padding a partial segment: %d bytes is not less than a segment (%d)", len(data), segSize)
	}
	out := make([]byte, segSize)
	copy(out, data)
	return out, nil
}

// partialRecord is where, inside the data directory in recovery, wal-fetch
// records the stream partial it served (the directory pgdr keeps for its
// own files, left out of backups).
const partialRecord = "pgdr/partial-used.json"

// PartialRecordPath is the file in data directory pgdata where wal-fetch
// records the stream partial it served to recovery.
func PartialRecordPath(pgdata string) string {
	return filepath.Join(pgdata, filepath.FromSlash(partialRecord))
}

// ReadPartialRecord returns the stream partial wal-fetch served to the
// recovery of pgdata, or nil when it served none.
func ReadPartialRecord(pgdata string) (*PartialUse, error) {
	b, err := os.ReadFile(PartialRecordPath(pgdata))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var u PartialUse
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, fmt.Errorf("%s: %w", PartialRecordPath(pgdata), err)
	}
	return &u, nil
}

// FetchWithPartial is Fetch for a recovery to the latest point that may
// use stream partials (wal-fetch --include-partial): a segment not in the
// archive is served from its stream partial, padded with zeros to the
// segment size, when the partial's timeline is the archive's newest
// (PartialRefusal). It returns what the partial held when one was served.
// The error wraps ErrNotInArchive only when neither the segment nor a
// usable partial exists; a partial that exists but does not verify is
// another error.
func (s *Shipper) FetchWithPartial(ctx context.Context, name, dest string) (*PartialUse, error) {
	notFound := s.Fetch(ctx, name, dest)
	if notFound == nil || !errors.Is(notFound, ErrNotInArchive) {
		return nil, notFound
	}
	n, err := wal.ParseName(name)
	if err != nil || n.Kind != wal.KindSegment {
		return nil, notFound
	}
	key := repo.StreamPartialKey(s.cfg.Cluster, name)
	found := false
	for _, r := range s.readOrder() {
		_, err := r.Store.Stat(ctx, key)
		switch {
		case err == nil:
			found = true
		case errors.Is(err, storage.ErrNotFound):
		case r.Async:
			s.log.Warn("looking for a stream partial: an async repository cannot be read", "repo", r.Name, "file", name, "err", err)
		default:
			return nil, fmt.Errorf("wal-fetch %s: repository %s: looking for its stream partial: %w", name, r.Name, err)
		}
	}
	if !found {
		return nil, notFound
	}
	v, err := ScanTimelines(ctx, s.repos, s.cfg.Cluster, s.log)
	if err != nil {
		return nil, fmt.Errorf("wal-fetch %s: deciding whether its stream partial may be used: %w", name, err)
	}
	if why := PartialRefusal(n.Timeline, v); why != "" {
		s.log.Warn("not using the stream partial of a segment not in the archive", "file", name, "reason", why)
		return nil, notFound
	}
	ids, err := s.keys.identities()
	if err != nil {
		return nil, fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	p, err := LoadPartial(ctx, s.repos, s.cfg.Cluster, name, ids, s.log)
	if err != nil {
		return nil, fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	if p == nil { // deleted since: the full segment was archived meanwhile
		if err := s.Fetch(ctx, name, dest); err != nil {
			return nil, err
		}
		return nil, nil
	}
	data, err := Padded(p.Data, p.Use.SegmentSize)
	if err != nil {
		return nil, fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	if err := writeAtomically(dest, data); err != nil {
		return nil, fmt.Errorf("wal-fetch %s: %w", name, err)
	}
	p.Use.Served = time.Now().UTC()
	s.log.Warn("recovery gets the stream partial of a segment not in the archive: the WAL after it is zeros, and recovery ends there",
		"file", name, "timeline", p.Use.Timeline, "bytes", p.Use.Bytes, "from_lsn", p.Use.FromLSN.String(), "to_lsn", p.Use.ToLSN.String(), "repo", p.Use.Repo)
	if abs, err := filepath.Abs(dest); err == nil {
		if pgwal := prefetchBase(abs); pgwal != "" {
			if err := recordPartial(filepath.Dir(pgwal), p.Use); err != nil {
				s.log.Warn("the stream partial served is not recorded for the restore's report", "err", err)
			}
		}
	}
	return &p.Use, nil
}

// writeAtomically writes data to dest through a temporary file in its
// directory, so dest appears only whole.
func writeAtomically(dest string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".pgdr-fetch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, bytes.NewReader(data)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dest)
}

// recordPartial writes u to PartialRecordPath(pgdata).
func recordPartial(pgdata string, u PartialUse) error {
	path := PartialRecordPath(pgdata)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(u, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomically(path, append(b, '\n'))
}
