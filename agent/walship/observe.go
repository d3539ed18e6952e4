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

// SetObserver makes s report its pushes and fetches to o. Call it before
// s is used (the daemon does while it is being built).
func (s *Shipper) SetObserver(o Observer) { s.obs = o }

// pushFailed reports a push that failed before any repository was
// written (the file could not be read, checked or encoded) as a failure
// in every repository it was meant for.
func (s *Shipper) pushFailed(start time.Time, err error) {
	if s.obs == nil || err == nil {
		return
	}
	for _, r := range repo.Sync(s.repos) {
		s.obs.ObservePush(r.Name, time.Since(start), err)
	}
}

// fetched reports one fetch attempt from r.
func (s *Shipper) fetched(r repo.Repo, start time.Time, err error) {
	if s.obs == nil || errors.Is(err, storage.ErrNotFound) {
		return
	}
	s.obs.ObserveFetch(r.Name, time.Since(start), err)
}
