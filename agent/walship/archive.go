package walship

import (
	"log/slog"
	"runtime"
	"sync"

	"filippo.io/age"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/keys"
	"github.com/pgdr/pgdr/pkg/objstream"
	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/wal"
)

// archive is what Shipper, Lister and Repairer share for one configured
// node: the opened repositories, the zstd coders, and the state loaded on
// first use. A Lister or Repairer made from a Shipper shares its pointers,
// so what one loads the others find loaded.
type archive struct {
	cfg   *config.Config
	repos []repo.Repo
	log   *slog.Logger
	pool  *objstream.Pool // reuses zstd coders across segments in the daemon
	keys  *keyring
	sysid *sysID
}

func newArchive(cfg *config.Config, repos []repo.Repo, log *slog.Logger) archive {
	return archive{cfg: cfg, repos: repos, log: log, pool: &objstream.Pool{Concurrency: encoderConcurrency()},
		keys: &keyring{cfg: cfg}, sysid: &sysID{pgdata: cfg.Postgres.PGData}}
}

// encoderConcurrency is the zstd concurrency of the objects a Shipper
// writes: 2 where a second CPU can run. archive_command waits for one
// segment at a time, so a push usually runs alone and the second CPU is
// idle: the pipelined encoder (objstream.Pool.Concurrency) took a one-shot
// wal-push of a segment that compresses 2:1 from about 130 ms to 80 ms of
// wall time on two CPUs, for the same CPU time and the same bytes (a
// segment that compresses 10:1 or more is still encoded in one goroutine:
// see objstream's adaptivePipeRatio). Where pushes run side by side
// (pushing ahead a backlog) they share the CPUs either way.
func encoderConcurrency() int { return min(2, runtime.GOMAXPROCS(0)) }

// keyring loads the node's keys on first use: the identities only where
// fetches (or reads of the archive) run, the signing key only where pushes
// run. A failed load is tried again on the next use.
type keyring struct {
	cfg    *config.Config
	ids    lazy[[]age.Identity]
	signer lazy[*objstream.Signer] // nil when objects are written unsigned
}

func (k *keyring) identities() ([]age.Identity, error) {
	return k.ids.get(func() ([]age.Identity, error) { return keys.Identities(k.cfg) })
}

// loadSigner loads the signing key (nil when objects are written
// unsigned) on first use.
func (k *keyring) loadSigner() (*objstream.Signer, error) {
	return k.signer.get(func() (*objstream.Signer, error) { return keys.Signer(k.cfg) })
}

// lazy is a value loaded on first use; a failed load is not remembered.
type lazy[T any] struct {
	mu     sync.Mutex
	v      T
	loaded bool
}

// get returns the value, calling load (under the lock, so once at a time)
// until it succeeds.
func (l *lazy[T]) get(load func() (T, error)) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.loaded {
		v, err := load()
		if err != nil {
			var zero T
			return zero, err
		}
		l.v, l.loaded = v, true
	}
	return l.v, nil
}

// sysID is the data directory's system identifier, read from pg_control on
// first use (and again while it reads as 0).
type sysID struct {
	pgdata string

	mu sync.Mutex
	id uint64
}

func (s *sysID) get() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == 0 {
		id, err := wal.SystemIdentifier(s.pgdata)
		if err != nil {
			return 0, err
		}
		s.id = id
	}
	return s.id, nil
}

// checkedRepos is the set of repositories (by name) that passed a check in
// this process, so the check runs once per repository; a failed check runs
// again next time. Concurrent first checks of one repository may both run.
// The zero value is an empty set.
type checkedRepos struct {
	mu sync.Mutex
	ok map[string]bool
}

// check returns nil if the repository named name passed already, and
// otherwise runs fn, remembering the repository when fn succeeds.
func (c *checkedRepos) check(name string, fn func() error) error {
	c.mu.Lock()
	ok := c.ok[name]
	c.mu.Unlock()
	if ok {
		return nil
	}
	if err := fn(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.ok == nil {
		c.ok = map[string]bool{}
	}
	c.ok[name] = true
	c.mu.Unlock()
	return nil
}
