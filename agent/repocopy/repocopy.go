package repocopy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pgdr/pgdr/agent/repocopy/queue"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// ErrVerify means a copy read back from the async repository differs from
// what was read from the sync one; the copy was deleted and is retried.
var ErrVerify = errors.New("copy read back differs from the source")

// Defaults of Options.
const (
	DefaultReconcile  = 10 * time.Minute
	DefaultPoll       = time.Second
	DefaultMaxBackoff = time.Minute
)

// Options tune the copier; zero values take the defaults.
type Options struct {
	Reconcile  time.Duration // between two reconciles
	Poll       time.Duration // between two looks at an empty queue
	MaxBackoff time.Duration // longest wait after a failure
}

// Target is one async repository and its queue.
type Target struct {
	Repo        repo.Repo
	Queue       *queue.Queue
	Concurrency int
}

// Deps is what a Copier works with.
type Deps struct {
	Cluster string
	// Sources are the sync repositories, in configuration order: an
	// object is read from the first that holds it.
	Sources []repo.Repo
	Targets []Target
	Log     *slog.Logger
}

// Status is one async repository's copy state.
type Status struct {
	Repo                 string    `json:"repo"`
	LagObjects           int64     `json:"lag_objects"`
	LagBytes             int64     `json:"lag_bytes"`
	OldestMissing        time.Time `json:"oldest_missing,omitzero"`
	OldestMissingSeconds float64   `json:"oldest_missing_seconds"`
	CopiedObjects        int64     `json:"copied_objects"`
	CopiedBytes          int64     `json:"copied_bytes"`
	LastReconcile        time.Time `json:"last_reconcile,omitzero"`
	LastError            string    `json:"last_error,omitempty"`
	LastErrorTime        time.Time `json:"last_error_time,omitzero"`
}

// Copier fills the async repositories; see the package documentation.
type Copier struct {
	d Deps
	o Options

	mu     sync.Mutex
	status map[string]*Status
	// reconcileNow asks a target's loop to reconcile at its next round.
	reconcileNow map[string]bool
	// infoOK holds the targets seen to hold the cluster's record.
	infoOK map[string]bool
	// retry holds, by target and queue file name, the entries whose copy
	// failed: each waits out its own backoff, so one object that cannot
	// be copied (unreadable in the sync repository, say) does not hold up
	// the queue behind it.
	retry map[string]retryState
}

type retryState struct {
	failures int
	at       time.Time
}

// New returns the copier of d (nil when d has no targets).
func New(d Deps, o Options) *Copier {
	if len(d.Targets) == 0 {
		return nil
	}
	if o.Reconcile <= 0 {
		o.Reconcile = DefaultReconcile
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	c := &Copier{d: d, o: o, status: map[string]*Status{}, reconcileNow: map[string]bool{}, infoOK: map[string]bool{}, retry: map[string]retryState{}}
	for _, t := range d.Targets {
		c.status[t.Repo.Name] = &Status{Repo: t.Repo.Name}
		c.reconcileNow[t.Repo.Name] = true
	}
	return c
}

// FromConfig builds the copier of cfg over repos (repo.OpenAll's): nil,
// nil when no repository is async.
func FromConfig(cfg *config.Config, repos []repo.Repo, log *slog.Logger, o Options) (*Copier, error) {
	d := Deps{Cluster: cfg.Cluster, Sources: repo.Sync(repos), Log: log.With("component", "repocopy")}
	for _, r := range repo.Async(repos) {
		q, err := queue.Open(queue.DirOf(cfg.Agent.StateDir, r.Name))
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", r.Name, err)
		}
		n := config.DefaultCopyConcurrency
		for _, cr := range cfg.Repos {
			if cr.Name == r.Name && cr.CopyConcurrency > 0 {
				n = cr.CopyConcurrency
			}
		}
		d.Targets = append(d.Targets, Target{Repo: r, Queue: q, Concurrency: n})
	}
	return New(d, o), nil
}

// Status returns every async repository's state, in configuration order.
// The lag is read from the queue directory now (its file names alone), so
// it counts what any process queued up to this moment.
func (c *Copier) Status() []Status {
	if c == nil {
		return nil
	}
	out := make([]Status, 0, len(c.d.Targets))
	for _, t := range c.d.Targets {
		ps, _, err := t.Queue.List()
		c.mu.Lock()
		s := *c.status[t.Repo.Name]
		c.mu.Unlock()
		if err != nil {
			s.LastError, s.LastErrorTime = err.Error(), time.Now().UTC()
		}
		l := queue.LagOf(ps)
		s.LagObjects, s.LagBytes, s.OldestMissing = l.Objects, l.Bytes, l.Oldest
		if !s.OldestMissing.IsZero() {
			s.OldestMissingSeconds = max(0, time.Since(s.OldestMissing).Seconds())
		}
		out = append(out, s)
	}
	return out
}

// ReconcileAll reconciles every async repository now (see Reconcile).
func (c *Copier) ReconcileAll(ctx context.Context) error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, t := range c.d.Targets {
		errs = append(errs, c.Reconcile(ctx, t))
	}
	return errors.Join(errs...)
}

// Run copies into every async repository until ctx ends.
func (c *Copier) Run(ctx context.Context) {
	if c == nil {
		return
	}
	var wg sync.WaitGroup
	for _, t := range c.d.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.runTarget(ctx, t)
		}()
	}
	wg.Wait()
}

func (c *Copier) runTarget(ctx context.Context, t Target) {
	log := c.d.Log.With("repo", t.Repo.Name)
	var backoff, reconcileBackoff time.Duration
	nextReconcile := time.Now()
	for ctx.Err() == nil {
		c.mu.Lock()
		force := c.reconcileNow[t.Repo.Name]
		c.reconcileNow[t.Repo.Name] = false
		c.mu.Unlock()
		if force || !time.Now().Before(nextReconcile) {
			if err := c.Reconcile(ctx, t); err != nil {
				// Retried sooner than the interval, but not every round:
				// each try lists the cluster.
				reconcileBackoff = min(max(2*reconcileBackoff, 5*time.Second), c.o.Reconcile)
				nextReconcile = time.Now().Add(reconcileBackoff)
				c.failed(t, err)
				log.Warn("reconcile failed; retrying later", "err", err, "retry_in", reconcileBackoff)
			} else {
				reconcileBackoff = 0
				nextReconcile = time.Now().Add(c.o.Reconcile)
			}
		}
		n, err := c.Drain(ctx, t)
		wait := c.o.Poll
		if err != nil && n == 0 {
			c.failed(t, err)
			backoff = min(max(2*backoff, time.Second), c.o.MaxBackoff)
			wait = backoff
			log.Warn("copy failed; retrying the oldest entries", "err", err, "retry_in", backoff)
		} else {
			if err != nil {
				c.failed(t, err)
				log.Warn("some copies failed; each is retried after its own backoff", "err", err)
			}
			backoff = 0
			if n > 0 {
				wait = 0
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (c *Copier) failed(t Target, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status[t.Repo.Name]
	s.LastError, s.LastErrorTime = err.Error(), time.Now().UTC()
}

func (c *Copier) copied(t Target, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status[t.Repo.Name]
	s.CopiedObjects++
	s.CopiedBytes += n
}

// ensureInfo copies the cluster's record (<cluster>/cluster.json) before
// anything else: readers of the async repository (wal-fetch, restore,
// expire) trust a repository only once it holds the record, and the
// writers write it to the sync repositories only.
func (c *Copier) ensureInfo(ctx context.Context, t Target) error {
	c.mu.Lock()
	ok := c.infoOK[t.Repo.Name]
	c.mu.Unlock()
	if ok {
		return nil
	}
	src, info, err := c.find(ctx, repo.ClusterInfoKey(c.d.Cluster))
	if errors.Is(err, storage.ErrNotFound) {
		return nil // nothing archived yet; looked for again next time
	}
	if err != nil {
		return fmt.Errorf("the cluster's record: %w", err)
	}
	if err := c.copyObject(ctx, t, src, info); err != nil {
		return err
	}
	c.mu.Lock()
	c.infoOK[t.Repo.Name] = true
	c.mu.Unlock()
	return nil
}

// retried records the outcome of a copy of the queue entry in file name:
// a failure sets its next try 1 s later, doubling up to MaxBackoff.
func (c *Copier) retried(t Target, name string, err error) {
	key := t.Repo.Name + "/" + name
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil || errors.Is(err, context.Canceled) {
		delete(c.retry, key)
		return
	}
	r := c.retry[key]
	r.failures++
	r.at = time.Now().Add(min(time.Second<<min(r.failures-1, 16), c.o.MaxBackoff))
	c.retry[key] = r
}

// batchPerWorker is how many queue entries one Drain round takes per worker.
const batchPerWorker = 16

// Drain copies the oldest entries of t's queue, at most t.Concurrency at
// once, and returns how many it finished. Corrupt queue files are
// quarantined (kept, renamed *.corrupt), reported, and make the next round
// reconcile, which finds whatever they stood for.
func (c *Copier) Drain(ctx context.Context, t Target) (int, error) {
	ps, bad, err := t.Queue.List()
	if err != nil {
		return 0, err
	}
	var (
		mu      sync.Mutex
		errs    []error
		done    int
		corrupt = len(bad) > 0
		// failedInARow copies failed since the last success: as many as
		// there are workers and the repository is likely down, so the
		// round starts no more (the loop backs off).
		failedInARow int
	)
	for _, b := range bad {
		errs = append(errs, errors.Join(b.Err, t.Queue.Quarantine(b.Name)))
	}
	// One round takes up to batchPerWorker entries per worker, oldest
	// first, so that a long queue is not listed again for every few
	// objects; a failure stops the round from starting more (the loop
	// backs off and retries the oldest).
	workers := max(t.Concurrency, 1)
	now := time.Now()
	c.mu.Lock()
	ps = slices.DeleteFunc(ps, func(p queue.Pending) bool { return c.retry[t.Repo.Name+"/"+p.Name].at.After(now) })
	c.mu.Unlock()
	if n := workers * batchPerWorker; len(ps) > n {
		ps = ps[:n]
	}
	if len(ps) > 0 {
		if err := c.ensureInfo(ctx, t); err != nil {
			return 0, errors.Join(append(errs, err)...)
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	for _, p := range ps {
		sem <- struct{}{} // a free worker: what the others finished is known
		mu.Lock()
		stop := failedInARow >= workers
		mu.Unlock()
		if stop || ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			e, err := t.Queue.Load(p)
			if err == nil {
				err = c.checkEntry(t, e)
			}
			switch {
			case errors.Is(err, queue.ErrCorrupt):
				err = errors.Join(err, t.Queue.Quarantine(p.Name))
				mu.Lock()
				corrupt = true
				mu.Unlock()
			case err != nil:
				// Unreadable (permissions, I/O): it waits out its own
				// backoff like a failed copy.
				c.retried(t, p.Name, err)
			default:
				if err = c.copyEntry(ctx, t, e); err == nil {
					err = t.Queue.Done(e)
				}
				c.retried(t, p.Name, err)
				mu.Lock()
				if err != nil {
					failedInARow++
				} else {
					failedInARow = 0
				}
				mu.Unlock()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				done++
			}
		}()
	}
	wg.Wait()
	if corrupt {
		c.mu.Lock()
		c.reconcileNow[t.Repo.Name] = true
		c.mu.Unlock()
	}
	return done, errors.Join(errs...)
}
