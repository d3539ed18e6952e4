package walship

import (
	"errors"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
)

// Observer learns how each WAL push and fetch went in each repository
// (the agent daemon's metrics). It is called where the work happens and
// must return at once.
type Observer interface {
	// ObservePush: one file's push to repository ended after took (from
	// reading the file to the object stored); err is nil when it is stored.
	ObservePush(repository string, took time.Duration, err error)
	// ObserveFetch: one file's fetch from repository ended after took;
	// err is nil when the file was written verified. A file the
	// repository does not hold is not reported.
	ObserveFetch(repository string, took time.Duration, err error)
}

// observerBox holds an Observer for an atomic pointer.
type observerBox struct{ o Observer }

// SetObserver makes s report its pushes and fetches to o (the daemon does
// while it is being built). Safe while pushes run: a second daemon built
// on the same Shipper (a refused start) may set it again.
func (s *Shipper) SetObserver(o Observer) { s.obs.Store(&observerBox{o}) }

// observer is the Observer set, or nil.
func (s *Shipper) observer() Observer {
	if b := s.obs.Load(); b != nil {
		return b.o
	}
	return nil
}

// pushFailed reports a push that failed before any repository was
// written (the file could not be read, checked or encoded) as a failure
// in every repository it was meant for.
func (s *Shipper) pushFailed(start time.Time, err error) {
	o := s.observer()
	if o == nil || err == nil {
		return
	}
	for _, r := range repo.Sync(s.repos) {
		o.ObservePush(r.Name, time.Since(start), err)
	}
}

// fetched reports one fetch attempt from r.
func (s *Shipper) fetched(r repo.Repo, start time.Time, err error) {
	o := s.observer()
	if o == nil || errors.Is(err, storage.ErrNotFound) {
		return
	}
	o.ObserveFetch(r.Name, time.Since(start), err)
}
