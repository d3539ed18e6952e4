package expire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"github.com/pgdr/pgdr/agent/backup"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/wal"
)

// DefaultGrace is how old the objects of a backup without a manifest (and
// its ID's reservation) must be before expiry removes them.
const DefaultGrace = 24 * time.Hour

// MinGrace is the shortest grace period accepted: far above the interval
// at which a running backup refreshes its reservation
// (backup.ReservationRefresh) and any plausible clock skew between hosts,
// so a running backup is never taken for a stale one.
const MinGrace = 6 * time.Hour

// DefaultParallel is how many deletes run at once per repository.
const DefaultParallel = 16

// Deps are what Run works with.
type Deps struct {
	Cluster string
	Repos   []repo.Repo
	// Identities decrypt timeline history files; without them (a host
	// holding only recipients) every later timeline is assumed reachable,
	// which keeps more WAL.
	Identities []age.Identity
	Log        *slog.Logger
	// Pins, when not nil, are the pins to honour (LoadPins over every
	// repository, also those not expired now); nil loads them from Repos.
	Pins map[string]*Pin
	// PinRepos are where a pin is looked for again right before each
	// backup is deleted (a pin made during the run); nil is Repos.
	PinRepos []repo.Repo
}

// Options tune one run.
type Options struct {
	Spec   Spec
	DryRun bool
	// Grace (default DefaultGrace) protects the objects of a backup that
	// has no manifest yet: a backup being written now.
	Grace    time.Duration
	Parallel int              // deletes at once (default DefaultParallel)
	Now      func() time.Time // default time.Now
	// TrustUnsigned allows deleting in a repository without signing
	// configured, where every manifest counts as trusted: whoever can
	// write the repository can forge newer backups that push real ones
	// out of their rules. Without it such a run is refused (a dry run is
	// not).
	TrustUnsigned bool
	// since is time.Since (tests stand in for it: how long a run held its
	// deleting marker).
	since func(time.Time) time.Duration
}

// Result is what one run did (or, dry, would do) in one repository.
type Result struct {
	Repo string `json:"repo"`
	Plan *Plan  `json:"plan"`
	// Deleted lists the backups removed, in order: their manifests went
	// one by one (a child before its parent), their data objects after
	// all of them.
	Deleted []string `json:"deleted_backups"`
	// DataLeft lists the backups whose manifest this run deleted but not
	// all of their data objects (a failed or interrupted run): the next
	// run removes those as leftovers.
	DataLeft []string `json:"data_left,omitempty"`
	// WALDeleted counts the WAL files removed.
	WALDeleted int `json:"wal_deleted"`
	// PartialsDeleted counts the stream partials removed.
	PartialsDeleted int `json:"stream_partials_deleted"`
	// WALSkipped, when not empty, says why no WAL was removed although
	// the plan had some to remove.
	WALSkipped string `json:"wal_skipped,omitempty"`
	// Leftovers lists the backup IDs (and stale reservations) whose
	// objects without a manifest were removed (or would be).
	Leftovers []string `json:"leftovers"`
	// DivergenceDeleted lists the divergence reports removed (or that
	// would be), with their raw WAL (decideDivergence).
	DivergenceDeleted []string `json:"divergence_deleted,omitempty"`
	// Objects counts every object removed.
	Objects int64 `json:"objects_deleted"`
	DryRun  bool  `json:"dry_run"`
}

// Run expires each repository of d by o.Spec. Repositories are decided
// and expired one by one, each by its own listing; pins are taken from
// all of them. It returns the results of every repository with the
// errors of those that failed, joined.
func Run(ctx context.Context, d Deps, o Options) ([]Result, error) {
	if err := o.Spec.Validate(); err != nil {
		return nil, err
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.Grace < MinGrace {
		return nil, fmt.Errorf("grace period %s is below the minimum %s: a running backup's reservation could be taken for a stale one", o.Grace, MinGrace)
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.since == nil {
		o.since = time.Since
	}
	if !o.DryRun && !o.TrustUnsigned {
		for _, r := range d.Repos {
			if r.Verifier == nil {
				return nil, fmt.Errorf("%w: repository %s: whoever can write it can forge newer backups that push real ones out of their rules; "+
					"configure signing, or pass --trust-unsigned if only trusted writers can write it (--dry-run shows the plan)", ErrUnsigned, r.Name)
			}
		}
	}
	pins := d.Pins
	if pins == nil {
		var err error
		if pins, err = LoadPins(ctx, d.Repos, d.Cluster); err != nil {
			return nil, err
		}
	}
	// A repository that fails (a backup started or a pin made during the
	// run, an unreadable manifest, ...) does not stop the others: each is
	// decided by its own listing. The errors are joined.
	var out []Result
	var errs []error
	for _, r := range d.Repos {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		res, err := runOne(ctx, d, o, r, pins)
		if res != nil {
			out = append(out, *res)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("repository %s: %w", r.Name, err))
		}
	}
	return out, errors.Join(errs...)
}

// backupObjects is what one listing of the backup prefix says of one ID.
type backupObjects struct {
	manifest bool
	objects  int
	newest   time.Time
}

func runOne(ctx context.Context, d Deps, o Options, r repo.Repo, pins map[string]*Pin) (*Result, error) {
	log := d.Log.With("repo", r.Name)
	now := o.Now()
	res := &Result{Repo: r.Name, DryRun: o.DryRun}
	// The backups started so far (see the protocol in agent/backup's
	// expiry.go): listed before the backups, again before deleting WAL.
	started, err := listStarted(ctx, r.Store, d.Cluster)
	if err != nil {
		return res, err
	}
	// The WAL is listed while the backups are listed and their manifests
	// read: on a large repository the two listings are most of a run's
	// time, and neither depends on the other (WAL archived during the
	// listing is newer than any the plan deletes).
	walCtx, stopWAL := context.WithCancel(ctx)
	walc := make(chan walListing, 1)
	go func() { walc <- listWAL(walCtx, r.Store, d.Cluster, min(o.Parallel, maxListers), chunkLogs, log) }()
	walDone := false
	defer func() {
		stopWAL()
		if !walDone {
			<-walc
		}
	}()
	// One listing of the backups: manifests, leftovers, reservations.
	prefix := backup.Prefix(d.Cluster)
	ids := map[string]*backupObjects{}
	reserved := map[string]time.Time{}    // stamp -> newest reservation
	reservations := map[string][]string{} // stamp -> keys
	err = r.Store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		rest := strings.TrimPrefix(oi.Key, prefix)
		first, _, _ := strings.Cut(rest, "/")
		if stamp, ok := strings.CutSuffix(first, backup.ReservedSuffix); ok {
			if oi.ModTime.After(reserved[stamp]) {
				reserved[stamp] = oi.ModTime
			}
			reservations[stamp] = append(reservations[stamp], oi.Key)
			return nil
		}
		if !backup.ValidID(first) {
			return nil
		}
		b := ids[first]
		if b == nil {
			b = &backupObjects{}
			ids[first] = b
		}
		b.objects++
		if oi.ModTime.After(b.newest) {
			b.newest = oi.ModTime
		}
		if rest == first+"/backup.manifest" {
			b.manifest = true
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("listing backups: %w", err)
	}
	var in Input
	in.Now = now
	in.Spec = o.Spec
	var withManifest []string
	for id, b := range ids {
		if b.manifest {
			withManifest = append(withManifest, id)
		}
	}
	sort.Strings(withManifest)
	ms, err := loadManifests(ctx, r, d.Cluster, withManifest, o.Parallel)
	if err != nil {
		return res, err
	}
	for i, id := range withManifest {
		in.Backups = append(in.Backups, fromManifest(ms[i], id, d.Cluster, r, pins))
	}
	wl := <-walc
	walDone = true
	if wl.err != nil {
		return res, fmt.Errorf("listing WAL: %w", wl.err)
	}
	in.WAL = wl.names
	if in.Partials, err = listPartials(ctx, r.Store, d.Cluster, log); err != nil {
		return res, fmt.Errorf("listing stream partials: %w", err)
	}
	in.History = verifiedHistories(ctx, r, d, wl.histories, log)
	edge := now.Add(-o.Grace)
	for stamp, t := range reserved {
		if t.After(edge) {
			in.InProgress = append(in.InProgress, stamp)
		}
	}
	sort.Strings(in.InProgress)
	plan, err := Decide(in)
	if err != nil {
		return res, err
	}
	res.Plan = plan
	for _, k := range plan.Keep {
		log.Debug("backup kept", "backup", k.ID, "reason", k.Reason)
	}
	// Leftovers: objects of an ID without a manifest, all older than the
	// grace period, and no fresh reservation of its stamp (a backup being
	// written now holds one, and its newest object is fresh).
	for id, b := range ids {
		if b.manifest || b.newest.After(edge) {
			continue
		}
		if t, ok := reserved[id[:len(id)-1]]; ok && t.After(edge) {
			continue
		}
		res.Leftovers = append(res.Leftovers, id)
	}
	var staleResv []string
	for stamp, t := range reserved {
		if !t.After(edge) {
			staleResv = append(staleResv, reservations[stamp]...)
			res.Leftovers = append(res.Leftovers, stamp+backup.ReservedSuffix)
		}
	}
	sort.Strings(res.Leftovers)
	reports, err := listDivergence(ctx, r.Store, d.Cluster)
	if err != nil {
		return res, fmt.Errorf("listing divergence reports: %w", err)
	}
	res.DivergenceDeleted = decideDivergence(reports, now, o.Spec.PITRWindow)
	if o.DryRun {
		return res, nil
	}
	del := &deleter{store: r.Store, parallel: o.Parallel, log: log, n: &res.Objects}
	// Markers left by an interrupted run (a backup seeing one is not
	// recorded) go, except those of backups about to be deleted again.
	deleting := map[string]bool{}
	for _, dcs := range plan.Delete {
		deleting[dcs.ID] = true
	}
	// Only markers older than backup.StaleMarkerAge: a younger one may be
	// another run's, live (see the protocol in agent/backup's expiry.go).
	// Only keys of the shape expiry writes are ever deleted.
	var staleMarks []string
	if err := r.Store.List(ctx, backup.DeletingPrefix(d.Cluster), func(oi storage.ObjectInfo) error {
		id := strings.TrimPrefix(oi.Key, backup.DeletingPrefix(d.Cluster))
		if !backup.ValidID(id) {
			log.Warn("object under the expiry markers' prefix that is not a marker: ignored (and not deleted)", "key", oi.Key)
			return nil
		}
		if !deleting[id] && oi.ModTime.Before(now.Add(-backup.StaleMarkerAge)) {
			staleMarks = append(staleMarks, oi.Key)
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("listing expiry markers: %w", err)
	}
	if err := del.keys(ctx, staleMarks, nil); err != nil {
		return res, fmt.Errorf("deleting stale expiry markers: %w", err)
	}
	expired := map[string]bool{}
	parentOf := map[string]string{}
	for _, b := range in.Backups {
		if b.Parent != "" && backup.ValidID(b.Parent) {
			parentOf[b.ID] = b.Parent
		}
	}
	// Backups newest first (a child before its parent), each manifest
	// first: once the manifest is gone it is not a backup, and its data is
	// a leftover the next run finishes.
	var gone []string // backups whose manifest this run deleted
	loopErr := func() error {
		for i := len(plan.Delete) - 1; i >= 0; i-- {
			dcs := plan.Delete[i]
			if err := ctx.Err(); err != nil {
				return err
			}
			// A backup started since the listing may have chosen this one as
			// its parent: mark it as being deleted, then look for children
			// (backup.ClaimParent does the reverse: of the two, at least one
			// sees the other).
			// A pin made since the pins were read stops the run (the plan,
			// WAL included, counted on this backup going).
			if err := pinnedNow(ctx, d, dcs.ID); err != nil {
				return err
			}
			mark := backup.DeletingKey(d.Cluster, dcs.ID)
			body := fmt.Sprintf(`{"time":%q}`, time.Now().UTC().Format(time.RFC3339Nano))
			if err := r.Store.Put(ctx, mark, strings.NewReader(body), int64(len(body))); err != nil {
				return fmt.Errorf("marking backup %s as being deleted: %w", dcs.ID, err)
			}
			marked := time.Now() // monotonic: no clock of another host
			child, err := newChild(ctx, r.Store, d.Cluster, dcs.ID, expired, ids, reserved, now.Add(-o.Grace), now.Add(-o.Grace))
			if err == nil && child != "" {
				err = fmt.Errorf("%w (backup %s builds on %s): stopped before deleting backup %s; the next run goes on", ErrBackupStarted, child, dcs.ID, dcs.ID)
			}
			// Another run may remove a marker older than StaleMarkerAge:
			// past half of it (clock skew and a slow store get the rest),
			// this one is no longer trusted to hold backups off.
			if el := o.since(marked); err == nil && el > backup.StaleMarkerAge/2 {
				err = fmt.Errorf("%w: %s passed since marking backup %s as being deleted (the limit is %s): stopped before deleting it; the next run goes on",
					ErrMarkerTooOld, el.Round(time.Second), dcs.ID, backup.StaleMarkerAge/2)
			}
			if err != nil {
				_ = r.Store.Delete(context.WithoutCancel(ctx), mark)
				return err
			}
			if err := r.Store.Delete(ctx, backup.ManifestKey(d.Cluster, dcs.ID)); err != nil {
				return fmt.Errorf("deleting backup %s's manifest: %w", dcs.ID, err)
			}
			expired[dcs.ID] = true
			gone = append(gone, dcs.ID)
			res.Objects++
			log.Info("backup expired: manifest deleted", "backup", dcs.ID, "type", dcs.Type, "tier", dcs.Tier, "reason", dcs.Reason)
			// Its records as a parent and as a child go with it (a record
			// left as a child would only make a later run wait for the grace
			// period before deleting its parent).
			if err := del.prefix(ctx, backup.ChildPrefix(d.Cluster, dcs.ID), backup.ValidID); err != nil {
				return fmt.Errorf("deleting backup %s's child records (the next run finishes it): %w", dcs.ID, err)
			}
			if p := parentOf[dcs.ID]; p != "" {
				if err := r.Store.Delete(ctx, backup.ChildKey(d.Cluster, p, dcs.ID)); err != nil {
					return fmt.Errorf("deleting %s: %w", backup.ChildKey(d.Cluster, p, dcs.ID), err)
				}
			}
			if err := r.Store.Delete(ctx, mark); err != nil {
				return fmt.Errorf("deleting %s: %w", mark, err)
			}
			res.Deleted = append(res.Deleted, dcs.ID)
		}
		return nil
	}()
	// The data of the backups whose manifest went, all at once: the
	// manifests went first, one backup after another, so whatever is left
	// of a backup's data is a leftover the next run removes.
	dataErr := func() error {
		left, err := del.backups(ctx, prefix, gone)
		res.DataLeft = left
		if err != nil {
			return fmt.Errorf("deleting the data of expired backups (their manifests are gone; the next run removes what is left of %s): %w",
				strings.Join(left, ", "), err)
		}
		return nil
	}
	if loopErr != nil {
		return res, errors.Join(loopErr, dataErr())
	}
	// The data goes while the WAL does.
	dataDone := make(chan error, 1)
	go func() { dataDone <- dataErr() }()
	// WAL after the backups: a backup is never left without the WAL it
	// needs while its manifest is still there. A backup started since the
	// listing may need WAL the plan did not know of (a standby's backup
	// starts at its last restartpoint): then no WAL goes this time.
	keys := make([]string, 0, len(plan.WALDeleteNames))
	for _, n := range plan.WALDeleteNames {
		keys = append(keys, repo.WALKey(d.Cluster, n))
	}
	if len(keys) > 0 {
		again, err := listStarted(ctx, r.Store, d.Cluster)
		if err != nil {
			return res, errors.Join(err, <-dataDone)
		}
		for k, t := range again {
			// New, or rewritten (a copy into an async repository
			// rewrites its backup's record on each try).
			if t0, seen := started[k]; !seen || t.After(t0) {
				res.WALSkipped = fmt.Sprintf("backup %s started during expiry: no WAL expired; the next run does it", strings.TrimPrefix(k, backup.StartedPrefix(d.Cluster)))
				log.Warn(res.WALSkipped)
				keys = nil
				break
			}
		}
	}
	if len(keys) > 0 {
		for _, rg := range plan.WALDelete {
			log.Info("WAL expired", "timeline", rg.Timeline, "first", rg.First, "last", rg.Last, "files", rg.Files, "reason", rg.Reason)
		}
	}
	var walN atomic.Int64
	err = del.keys(ctx, keys, &walN)
	res.WALDeleted = int(walN.Load())
	if err != nil {
		err = fmt.Errorf("deleting WAL (the next run finishes it): %w", err)
	}
	// Stream partials: those of archived segments always, the others
	// with the WAL they would extend.
	var pkeys []string
	for _, p := range plan.PartialDelete {
		if p.archived || res.WALSkipped == "" {
			pkeys = append(pkeys, repo.StreamPartialKey(d.Cluster, p.Segment))
			log.Info("stream partial expired", "segment", p.Segment, "reason", p.Reason)
		}
	}
	var partialN atomic.Int64
	perr := del.keys(ctx, pkeys, &partialN)
	res.PartialsDeleted = int(partialN.Load())
	if perr != nil {
		err = errors.Join(err, fmt.Errorf("deleting stream partials (the next run finishes it): %w", perr))
	}
	if err := errors.Join(err, <-dataDone); err != nil {
		return res, err
	}
	var oldStarted []string
	for k, t := range started {
		if backup.ValidStamp(strings.TrimPrefix(k, backup.StartedPrefix(d.Cluster))) && t.Before(now.Add(-o.Grace)) {
			oldStarted = append(oldStarted, k)
		}
	}
	if err := del.keys(ctx, oldStarted, nil); err != nil {
		return res, fmt.Errorf("deleting old backup start records: %w", err)
	}
	for _, id := range res.Leftovers {
		if strings.HasSuffix(id, backup.ReservedSuffix) {
			continue
		}
		// The copier into an async repository (agent/repocopy) may be
		// completing this backup now, trusting the objects it finds:
		// mark it as being deleted, then look again for a reservation
		// and the manifest (the copier reserves, then looks for the
		// mark; of the two, at least one sees the other).
		mark := backup.DeletingKey(d.Cluster, id)
		body := fmt.Sprintf(`{"time":%q,"leftover":true}`, time.Now().UTC().Format(time.RFC3339Nano))
		if err := r.Store.Put(ctx, mark, strings.NewReader(body), int64(len(body))); err != nil {
			return res, fmt.Errorf("marking the leftover objects of %s as being deleted: %w", id, err)
		}
		why, err := leftoverInUse(ctx, r.Store, d.Cluster, id, reservations[id[:len(id)-1]], edge)
		if err != nil || why != "" {
			_ = r.Store.Delete(context.WithoutCancel(ctx), mark)
			if err != nil {
				return res, err
			}
			log.Info("leftover objects kept: "+why, "backup", id)
			continue
		}
		log.Info("removing the objects of a backup without a manifest (an interrupted expiry or a failed backup)", "backup", id,
			"objects", ids[id].objects, "newest", ids[id].newest.UTC().Format(time.RFC3339))
		if err := del.prefix(ctx, prefix+id+"/", nil); err != nil {
			return res, fmt.Errorf("deleting leftover objects of %s: %w", id, err)
		}
		if err := r.Store.Delete(ctx, mark); err != nil {
			return res, fmt.Errorf("deleting %s: %w", mark, err)
		}
	}
	if err := del.keys(ctx, staleResv, nil); err != nil {
		return res, fmt.Errorf("deleting stale reservations: %w", err)
	}
	for _, id := range res.DivergenceDeleted {
		log.Info("divergence report expired", "id", id)
		if err := del.prefix(ctx, repo.DivergencePrefix(d.Cluster)+id+"/", nil); err != nil {
			return res, fmt.Errorf("deleting divergence report %s (the next run finishes it): %w", id, err)
		}
	}
	return res, nil
}

// listPartials lists the segment names of the cluster's stream partials:
// only keys exactly where the receiver puts them (repo.StreamPartialKey);
// any other key under the prefix is ignored and never deleted.
func listPartials(ctx context.Context, st storage.ObjectStore, cluster string, log *slog.Logger) ([]string, error) {
	var out []string
	err := st.List(ctx, repo.StreamPrefix(cluster), func(oi storage.ObjectInfo) error {
		base := oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]
		name, ok := strings.CutSuffix(base, ".partial")
		if n, err := wal.ParseName(name); !ok || err != nil || n.Kind != wal.KindSegment || oi.Key != repo.StreamPartialKey(cluster, name) {
			log.Warn("object under the stream prefix that is not a stream partial's key: ignored (and not deleted)", "key", oi.Key)
			return nil
		}
		out = append(out, name)
		return nil
	})
	return out, err
}

// loadManifests reads the manifests of ids, at most parallel at once.
// Only their headers are kept (not their lists of files): a repository
// may hold many backups of many files.
func loadManifests(ctx context.Context, r repo.Repo, cluster string, ids []string, parallel int) ([]*backup.ManifestHeader, error) {
	out := make([]*backup.ManifestHeader, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, min(parallel, 8))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = backup.LoadManifestHeader(ctx, r, cluster, id)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, err := range errs {
		if err != nil {
			// What depends on a backup whose manifest cannot be read is
			// unknown: deciding without it could remove a parent.
			return nil, fmt.Errorf("backup %s's manifest cannot be read, so what depends on it is unknown and nothing is expired "+
				"(check it with backup-verify; if it is not a backup of this cluster, remove %s by hand): %w", ids[i], backup.ManifestKey(cluster, ids[i]), err)
		}
	}
	return out, nil
}

// ErrUnsigned means expiry was refused in a repository without signing.
var ErrUnsigned = errors.New("signing is not configured, so no manifest is authenticated")

// ErrBackupStarted means a backup started while expiry was deleting
// backups: it stopped, leaving the repository consistent.
var ErrBackupStarted = errors.New("a backup started during expiry")

// ErrMarkerTooOld means a run's own deleting marker became old enough for
// another run to take it for stale before the manifest was deleted: it
// stopped before deleting the backup.
var ErrMarkerTooOld = errors.New("the expiry marker became too old")

// ErrPinnedDuringRun means a backup about to be deleted was pinned since
// the run read the pins: the run stopped before it.
var ErrPinnedDuringRun = errors.New("a backup was pinned during expiry")

// pinnedNow fails when backup id is pinned in any of d's pin repositories.
func pinnedNow(ctx context.Context, d Deps, id string) error {
	repos := d.PinRepos
	if repos == nil {
		repos = d.Repos
	}
	for _, r := range repos {
		_, err := r.Store.Stat(ctx, PinKey(d.Cluster, id))
		if err == nil {
			return fmt.Errorf("%w (backup %s, in repository %s): stopped before deleting it; the next run goes on", ErrPinnedDuringRun, id, r.Name)
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("repository %s: checking for a pin of %s: %w", r.Name, id, err)
		}
	}
	return nil
}

// listStarted lists the backups' start records (key -> ModTime).
func listStarted(ctx context.Context, st storage.ObjectStore, cluster string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := st.List(ctx, backup.StartedPrefix(cluster), func(oi storage.ObjectInfo) error {
		out[oi.Key] = oi.ModTime
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing backup start records: %w", err)
	}
	return out, nil
}

// newChild returns a backup recorded (backup.ClaimParent) as building on
// parent that this run did not expire, "" when none. A record is ignored
// as stale only when it is older than staleBefore (the listing's time
// less the grace period: its backup's data, written before it, was in the
// listing), its backup had no manifest in the listing and no reservation
// fresher than freshAfter: a backup that failed after claiming.
func newChild(ctx context.Context, st storage.ObjectStore, cluster, parent string, expired map[string]bool,
	ids map[string]*backupObjects, reserved map[string]time.Time, staleBefore, freshAfter time.Time) (string, error) {
	prefix := backup.ChildPrefix(cluster, parent)
	found := ""
	err := st.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		c := strings.TrimPrefix(oi.Key, prefix)
		if expired[c] {
			return nil
		}
		if oi.ModTime.Before(staleBefore) && backup.ValidID(c) {
			b := ids[c]
			t, resv := reserved[c[:len(c)-1]]
			if (b == nil || !b.manifest) && (!resv || !t.After(freshAfter)) {
				return nil
			}
		}
		found = c
		return io.EOF
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("listing the backups recorded on %s: %w", parent, err)
	}
	return found, nil
}

// maxBackupWAL bounds the WAL one backup may span (start to stop): a
// manifest claiming more (1 PiB) is not believed.
const maxBackupWAL = 1 << 50

// fromManifest is the decision's view of m, read from r under id.
func fromManifest(m *backup.ManifestHeader, id, cluster string, r repo.Repo, pins map[string]*Pin) Backup {
	b := Backup{ID: id, Type: m.Type, Parent: m.Parent, Tier: m.Tier, StartTime: m.StartTime, StopTime: m.StopTime,
		StartLSN: m.StartLSN, StopLSN: m.StopLSN, Timeline: m.Timeline, SegmentSize: m.SegmentSize}
	switch {
	case r.Verifier != nil && !m.Signed:
		b.Untrusted = "not signed by a trusted key"
	case m.ID != id || m.Cluster != cluster:
		b.Untrusted = fmt.Sprintf("manifest says backup %s of cluster %s", m.ID, m.Cluster)
	case m.Type != TypeFull && m.Type != TypeDiff && m.Type != TypeIncr:
		b.Untrusted = fmt.Sprintf("unknown type %q", m.Type)
	case m.SegmentSize == 0 || m.SegmentSize&(m.SegmentSize-1) != 0 || m.StopLSN < m.StartLSN || m.Timeline == 0:
		b.Untrusted = "impossible WAL position or segment size"
	case m.StopLSN-m.StartLSN > maxBackupWAL:
		b.Untrusted = fmt.Sprintf("implausible WAL range %s..%s", m.StartLSN, m.StopLSN)
	}
	if p, ok := pins[id]; ok {
		b.Pinned, b.PinNote = true, p.Note
	}
	return b
}

// verifiedHistories reads the timeline history files whose signature
// verifies; the others (and all of them without identities or signing)
// are left out, which keeps more WAL.
func verifiedHistories(ctx context.Context, r repo.Repo, d Deps, names []string, log *slog.Logger) map[uint32][]wal.HistoryEntry {
	if r.Verifier == nil || len(d.Identities) == 0 {
		return nil
	}
	out := map[uint32][]wal.HistoryEntry{}
	for _, n := range names {
		key := repo.WALKey(d.Cluster, n)
		h, err := readHistory(ctx, r, d.Identities, key, n)
		if err != nil {
			log.Warn("timeline history not used (WAL on later timelines is kept as if reachable)", "file", key, "err", err)
			continue
		}
		name, _ := wal.ParseName(n)
		out[name.Timeline] = h
	}
	return out
}

func readHistory(ctx context.Context, r repo.Repo, ids []age.Identity, key, name string) ([]wal.HistoryEntry, error) {
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	or, err := objstream.NewReaderOpts(rc, r.SignedReadOptions(key, ids, true))
	if err != nil {
		return nil, err
	}
	defer or.Close()
	b, err := io.ReadAll(io.LimitReader(or, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<20 {
		return nil, errors.New("larger than 1 MiB")
	}
	if or.Header.Signature == nil {
		return nil, errors.New("not signed")
	}
	n, _ := wal.ParseName(name)
	return wal.ParseHistory(b, n.Timeline)
}

// deleter deletes objects with bounded parallelism.
type deleter struct {
	store    storage.ObjectStore
	parallel int
	log      *slog.Logger
	n        *int64
	mu       sync.Mutex
}

// prefix deletes every object under p (one listing); with valid, only
// those whose key past p it accepts (the others are logged and left).
func (d *deleter) prefix(ctx context.Context, p string, valid func(string) bool) error {
	var keys []string
	if err := d.store.List(ctx, p, func(oi storage.ObjectInfo) error {
		if valid != nil && !valid(strings.TrimPrefix(oi.Key, p)) {
			d.log.Warn("object of an unexpected shape under an expiry prefix: ignored (and not deleted)", "key", oi.Key)
			return nil
		}
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		return fmt.Errorf("listing %s: %w", p, err)
	}
	return d.keys(ctx, keys, nil)
}

// backups deletes the objects under prefix+id+"/" for each of ids (one
// listing each), a few backups at once, and stops at the first error (or
// the context's end). It returns the IDs whose objects were not all
// deleted (failed or not reached), in the order of ids.
func (d *deleter) backups(ctx context.Context, prefix string, ids []string) ([]string, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make([]bool, len(ids))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(d.parallel, 4, max(len(ids), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := d.prefix(ctx, prefix+ids[i]+"/", nil); err != nil {
					cancel(fmt.Errorf("backup %s: %w", ids[i], err))
					continue
				}
				done[i] = true
				d.log.Info("backup expired: data deleted", "backup", ids[i])
			}
		}()
	}
feed:
	for i := range ids {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	var left []string
	for i, ok := range done {
		if !ok {
			left = append(left, ids[i])
		}
	}
	if len(left) == 0 {
		return nil, nil
	}
	return left, context.Cause(ctx)
}

// keys deletes keys, at most d.parallel at once (batches of
// storage.MaxBatchDelete where the store deletes in batches), and stops at
// the first error (or the context's end); count, when not nil, counts the
// deletes: exactly, a failed batch's keys counted only where the store
// said which went (storage.BatchDeleteError).
func (d *deleter) keys(ctx context.Context, keys []string, count *atomic.Int64) error {
	bd, batched := d.store.(storage.BatchDeleter)
	size := 1
	if batched {
		size = storage.MaxBatchDelete
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan []string)
	var wg sync.WaitGroup
	workers := min(d.parallel, max((len(keys)+size-1)/size, 1))
	if batched {
		workers = min(workers, 4) // each batch is already 1,000 deletes
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ks := range work {
				var err error
				if batched {
					err = bd.DeleteBatch(ctx, ks)
				} else {
					err = d.store.Delete(ctx, ks[0])
				}
				gone := len(ks)
				if err != nil {
					// A batch the store answered key by key: the
					// others went. Otherwise none is counted.
					gone = 0
					if be := (*storage.BatchDeleteError)(nil); errors.As(err, &be) {
						gone = max(len(ks)-len(be.Failed), 0)
					}
					cancel(fmt.Errorf("deleting %s: %w", ks[0], err))
				}
				if count != nil {
					count.Add(int64(gone))
				}
				d.mu.Lock()
				*d.n += int64(gone)
				d.mu.Unlock()
			}
		}()
	}
feed:
	for i := 0; i < len(keys); i += size {
		select {
		case work <- keys[i:min(i+size, len(keys))]:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}

// leftoverInUse looks again, after its deletion mark was written, at what
// would make backup id's objects no leftover: a reservation of its stamp
// fresh or not in the first listing (a backup or a copy started since;
// reservations in the listing were seen then), in that order before its
// manifest (a copy writes the manifest before it releases its
// reservation). It says why they are kept, or "".
func leftoverInUse(ctx context.Context, st storage.ObjectStore, cluster, id string, listed []string, edge time.Time) (string, error) {
	why := ""
	err := st.List(ctx, backup.ReservePrefix(cluster, id[:len(id)-1]), func(oi storage.ObjectInfo) error {
		if oi.ModTime.After(edge) || !slices.Contains(listed, oi.Key) {
			why = "a backup or a copy of it started since the listing (" + oi.Key + ")"
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("listing the reservations of %s: %w", id, err)
	}
	if why != "" {
		return why, nil
	}
	_, err = st.Stat(ctx, backup.ManifestKey(cluster, id))
	if err == nil {
		return "its manifest appeared since the listing", nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return "", fmt.Errorf("checking %s: %w", backup.ManifestKey(cluster, id), err)
	}
	return "", nil
}
