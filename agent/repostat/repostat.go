package repostat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/tiername"
	"github.com/pgdr/pgdr/pkg/wal"
)

// MaxTiers bounds the tier label values per repository: tiers past the
// first MaxTiers (by name) are counted under OtherTier.
const MaxTiers = 16

// ManualTier is the tier of a backup taken outside the policy (its
// manifest names no tier); OtherTier gathers the tiers past MaxTiers.
const (
	ManualTier = "manual"
	OtherTier  = "other"
)

// Tier is what a repository holds of one tier.
type Tier struct {
	Name    string
	Backups int
	// Last is the end time of the newest complete backup of each type
	// (full, diff, incr) of the tier.
	Last map[string]time.Time
}

// Snapshot is what the reader last learned of one repository.
type Snapshot struct {
	Repository string
	// Read is when the repository was last read successfully (zero:
	// never); Failures counts the reads that failed.
	Read     time.Time
	Failures uint64
	Tiers    []Tier // by name
	// WALKnown: the repository holds a WAL segment; WALName is the newest
	// segment of the newest timeline, WALStored when it was stored, WALEnd
	// the WAL position where it ends.
	WALKnown  bool
	WALName   string
	WALStored time.Time
	WALEnd    uint64
}

// Reader reads the repositories; Run reads them on an interval, Snapshots
// returns what it learned. Safe for concurrent use.
type Reader struct {
	cluster string
	log     *slog.Logger
	repos   []*repoState // read by one round at a time (roundMu)

	roundMu sync.Mutex
	mu      sync.Mutex
	snaps   []Snapshot
}

// repoState is what the reader keeps of one repository between rounds.
type repoState struct {
	r repo.Repo
	// manifests: the header of every complete backup seen (by ID).
	manifests map[string]*backup.ManifestHeader
	// bad: the manifests that could not be read (by ID), as they were
	// listed: read again only once they change.
	bad map[string]storage.ObjectInfo
	// walKey is the key of the newest WAL segment seen ("" before the
	// first listing of the WAL prefix).
	walKey    string
	walStored time.Time
}

// New returns a reader of repos (the cluster's); it reads nothing until
// Run or ReadOnce.
func New(cluster string, repos []repo.Repo, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rd := &Reader{cluster: cluster, log: log}
	for _, r := range repos {
		rd.repos = append(rd.repos, &repoState{r: r, manifests: map[string]*backup.ManifestHeader{}, bad: map[string]storage.ObjectInfo{}})
		rd.snaps = append(rd.snaps, Snapshot{Repository: r.Name})
	}
	return rd
}

// Run reads every repository at once and then every interval until ctx
// ends.
func (rd *Reader) Run(ctx context.Context, interval time.Duration) {
	if len(rd.repos) == 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, max(interval, 30*time.Second))
		rd.ReadOnce(rctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReadOnce reads every repository once and publishes what it found; a
// repository that cannot be read keeps its previous figures and counts a
// failure.
func (rd *Reader) ReadOnce(ctx context.Context) {
	rd.roundMu.Lock()
	defer rd.roundMu.Unlock()
	for i, st := range rd.repos {
		rd.mu.Lock()
		prev := rd.snaps[i]
		rd.mu.Unlock()
		snap, err := rd.read(ctx, st, prev)
		rd.mu.Lock()
		if err != nil {
			rd.snaps[i].Failures++
			rd.mu.Unlock()
			// Stopping is no failure to warn of; a round out of time
			// (Run's deadline) is.
			if !errors.Is(ctx.Err(), context.Canceled) {
				rd.log.Warn("reading the repository for its metrics failed", "repo", st.r.Name, "err", err)
			}
			continue
		}
		snap.Failures = rd.snaps[i].Failures
		rd.snaps[i] = snap
		rd.mu.Unlock()
	}
}

// Snapshots returns what the reader last learned, one per repository in
// the configured order.
func (rd *Reader) Snapshots() []Snapshot {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	out := make([]Snapshot, len(rd.snaps))
	copy(out, rd.snaps)
	return out
}

func (rd *Reader) read(ctx context.Context, st *repoState, prev Snapshot) (Snapshot, error) {
	snap := Snapshot{Repository: st.r.Name}
	ids, err := rd.backupIDs(ctx, st.r)
	if err != nil {
		return snap, err
	}
	seen := make(map[string]bool, len(ids))
	for _, b := range ids {
		id := b.id
		seen[id] = true
		if st.manifests[id] != nil {
			continue
		}
		if was, ok := st.bad[id]; ok && was.Size == b.info.Size && was.ModTime.Equal(b.info.ModTime) {
			continue // unreadable, and unchanged since
		}
		delete(st.bad, id)
		h, err := backup.LoadManifestHeader(ctx, st.r, rd.cluster, id)
		switch {
		case errors.Is(err, backup.ErrNoBackup):
			// Gone since the listing (expired).
		case err != nil:
			if ctx.Err() != nil {
				return snap, ctx.Err()
			}
			// A damaged manifest is not a backup; backup-list names it.
			// It is not read again until it changes: a forged one can
			// be made slow to decode.
			rd.log.Debug("a backup's manifest cannot be read; not counted", "repo", st.r.Name, "backup", id, "err", err)
			st.bad[id] = b.info
		default:
			st.manifests[id] = h
		}
	}
	for id := range st.manifests {
		if !seen[id] {
			delete(st.manifests, id)
		}
	}
	for id := range st.bad {
		if !seen[id] {
			delete(st.bad, id)
		}
	}
	snap.Tiers = keepTiers(tiers(st.manifests), prev.Tiers)
	if err := rd.newestWAL(ctx, st); err != nil {
		return snap, err
	}
	if st.walKey != "" {
		name := st.walKey[strings.LastIndexByte(st.walKey, '/')+1:]
		snap.WALKnown, snap.WALName, snap.WALStored = true, name, st.walStored
		if n, err := wal.ParseName(name); err == nil {
			size := segmentSize(st.manifests)
			snap.WALEnd = (n.SegNo(size) + 1) * size
		}
	}
	snap.Read = time.Now()
	return snap, nil
}

// segmentSize is the WAL segment size the backups record (the newest
// one's), or PostgreSQL's default. A size no server can have (a power of
// two from 1 MiB to 1 GiB) is ignored.
func segmentSize(ms map[string]*backup.ManifestHeader) uint64 {
	var newest *backup.ManifestHeader
	for _, m := range ms {
		sz := m.SegmentSize
		if sz >= 1<<20 && sz <= 1<<30 && sz&(sz-1) == 0 && (newest == nil || m.StopTime.After(newest.StopTime)) {
			newest = m
		}
	}
	if newest == nil {
		return wal.DefaultSegmentSize
	}
	return newest.SegmentSize
}

// tiers counts the backups by tier, at most MaxTiers names (by name) and
// OtherTier for the rest.
func tiers(ms map[string]*backup.ManifestHeader) []Tier {
	byName := map[string]*Tier{}
	for _, m := range ms {
		// Tier and type become label values, and whoever can write to
		// the repository can write a manifest: a tier that is not a
		// tier name counts under other, a type other than the three
		// gives no end time.
		name := m.Tier
		switch {
		case name == "":
			name = ManualTier
		case !tiername.Valid(name):
			name = OtherTier
		}
		t := byName[name]
		if t == nil {
			t = &Tier{Name: name, Last: map[string]time.Time{}}
			byName[name] = t
		}
		t.Backups++
		switch m.Type {
		case backup.TypeFull, backup.TypeDiff, backup.TypeIncr:
			if m.StopTime.After(t.Last[m.Type]) {
				t.Last[m.Type] = m.StopTime
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Tier
	var other *Tier
	for i, n := range names {
		t := byName[n]
		if i < MaxTiers && n != OtherTier {
			out = append(out, *t)
			continue
		}
		if other == nil {
			other = &Tier{Name: OtherTier, Last: map[string]time.Time{}}
		}
		other.Backups += t.Backups
		for typ, at := range t.Last {
			if at.After(other.Last[typ]) {
				other.Last[typ] = at
			}
		}
	}
	if other != nil {
		out = append(out, *other)
	}
	return out
}

// keepTiers adds to now the tiers of before it lacks, with no backups,
// while there is room (MaxTiers and OtherTier): a tier whose last backup
// expired reads 0 rather than vanishing.
func keepTiers(now, before []Tier) []Tier {
	have := map[string]bool{}
	for _, t := range now {
		have[t.Name] = true
	}
	for _, t := range before {
		if !have[t.Name] && len(now) < MaxTiers+1 {
			now = append(now, Tier{Name: t.Name, Last: map[string]time.Time{}})
			have[t.Name] = true
		}
	}
	sort.Slice(now, func(i, j int) bool { return now[i].Name < now[j].Name })
	return now
}

// listedBackup is a backup ID and its manifest as listed.
type listedBackup struct {
	id   string
	info storage.ObjectInfo
}

// backupIDs lists the IDs of the backups whose manifest r holds, in
// order. A store that lists directories (file: one directory read; S3: a
// request per 1000 backups) gives the backups' IDs, and each manifest is
// looked for (a HEAD on S3); another store is listed whole.
func (rd *Reader) backupIDs(ctx context.Context, r repo.Repo) ([]listedBackup, error) {
	prefix := backup.Prefix(rd.cluster)
	var ids []listedBackup
	if dl, ok := r.Store.(storage.DirLister); ok {
		dirs, err := dl.ListDirs(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("listing backups in repository %s: %w", r.Name, err)
		}
		for _, id := range dirs {
			if !backup.ValidID(id) {
				continue
			}
			if oi, err := r.Store.Stat(ctx, backup.ManifestKey(rd.cluster, id)); err == nil {
				ids = append(ids, listedBackup{id, oi})
			} else if !errors.Is(err, storage.ErrNotFound) {
				return nil, fmt.Errorf("repository %s: %w", r.Name, err)
			}
		}
		return ids, nil
	}
	err := r.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(oi.Key, prefix), "/backup.manifest"); ok && backup.ValidID(id) {
			ids = append(ids, listedBackup{id, oi})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing backups in repository %s: %w", r.Name, err)
	}
	return ids, nil
}

// newestWAL updates st's newest WAL segment: the first time by listing
// the WAL prefix, then by looking for newer timelines' keys and listing
// the newest segment's log and the next ones. When the newest segment it
// remembers is no longer there, it lists the WAL prefix again.
func (rd *Reader) newestWAL(ctx context.Context, st *repoState) error {
	prefix := repo.WALPrefix(rd.cluster)
	seen := false // st.walKey was among the keys listed
	consider := func(oi storage.ObjectInfo) error {
		if oi.Key == st.walKey {
			seen = true
		}
		name := oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]
		if oi.Key != repo.WALKey(rd.cluster, name) {
			return nil
		}
		if n, err := wal.ParseName(name); err != nil || n.Kind != wal.KindSegment {
			return nil
		}
		if oi.Key > st.walKey {
			st.walKey, st.walStored = oi.Key, oi.ModTime
		}
		return nil
	}
	list := func(p string) error {
		if err := st.r.Store.List(ctx, p, consider); err != nil {
			return fmt.Errorf("listing WAL in repository %s: %w", st.r.Name, err)
		}
		return nil
	}
	if st.walKey == "" {
		return list(prefix)
	}
	tli := func() (uint64, error) {
		t, err := strconv.ParseUint(st.walKey[len(prefix):len(prefix)+8], 16, 32)
		if err != nil {
			return 0, fmt.Errorf("repository %s: WAL key %s: %w", st.r.Name, st.walKey, err)
		}
		return t, nil
	}
	cur, err := tli()
	if err != nil {
		return err
	}
	// Newer timelines first: their keys sort after every key of the
	// older ones. Timelines can be skipped (a promotion whose history
	// file alone was archived, or nothing), so every newer one is looked
	// at: by listing the timelines' directories (one directory read in a
	// file store, one request on S3), elsewhere by probing the next few.
	switch s := st.r.Store.(type) {
	case storage.DirLister:
		dirs, err := s.ListDirs(ctx, prefix)
		if err != nil {
			return fmt.Errorf("listing WAL timelines in repository %s: %w", st.r.Name, err)
		}
		for _, d := range dirs {
			if t, err := strconv.ParseUint(d, 16, 32); err == nil && len(d) == 8 && t > cur {
				if err := list(prefix + d + "/"); err != nil {
					return err
				}
			}
		}
	default:
		for next, misses := cur+1, 0; misses < maxTimelineGap && next <= 0xFFFFFFFF; next++ {
			before := st.walKey
			if err := list(prefix + fmt.Sprintf("%08X/", next)); err != nil {
				return err
			}
			if st.walKey == before {
				misses++
			} else {
				misses = 0
			}
		}
	}
	// Then the newest segment's log and the logs after it, while they
	// hold segments (each log is 4 GiB of WAL).
	for i := range 64 {
		name := st.walKey[strings.LastIndexByte(st.walKey, '/')+1:]
		log, err := strconv.ParseUint(name[8:16], 16, 32)
		if err != nil {
			return fmt.Errorf("repository %s: WAL key %s: %w", st.r.Name, st.walKey, err)
		}
		dir := prefix + name[:8] + "/"
		seen = false
		if err := list(dir + name[:16]); err != nil {
			return err
		}
		if i == 0 && !seen {
			// Gone (deleted by hand, replaced, the repository emptied
			// and archived into again): what the WAL prefix holds now.
			rd.log.Info("the newest WAL segment seen in the repository is gone; listing its WAL again", "repo", st.r.Name, "key", st.walKey)
			st.walKey, st.walStored = "", time.Time{}
			return list(prefix)
		}
		before := st.walKey
		if err := list(dir + name[:8] + fmt.Sprintf("%08X", log+1)); err != nil {
			return err
		}
		if st.walKey == before {
			break
		}
	}
	return nil
}

// maxTimelineGap is how many timelines in a row, after the newest one
// seen, a store that lists neither directories nor from a key is probed
// for.
const maxTimelineGap = 4
