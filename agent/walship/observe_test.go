package walship

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/config"
)

// recorder is an Observer that counts outcomes per repository.
type recorder struct {
	mu                 sync.Mutex
	pushOK, pushFail   map[string]int
	fetchOK, fetchFail map[string]int
	negative           bool
}

func newRecorder() *recorder {
	return &recorder{pushOK: map[string]int{}, pushFail: map[string]int{}, fetchOK: map[string]int{}, fetchFail: map[string]int{}}
}

func (r *recorder) ObservePush(repository string, took time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.negative = r.negative || took < 0
	if err != nil {
		r.pushFail[repository]++
	} else {
		r.pushOK[repository]++
	}
}

func (r *recorder) ObserveFetch(repository string, took time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.negative = r.negative || took < 0
	if err != nil {
		r.fetchFail[repository]++
	} else {
		r.fetchOK[repository]++
	}
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("push ok %v failed %v, fetch ok %v failed %v", r.pushOK, r.pushFail, r.fetchOK, r.fetchFail)
}

// TestObserverPerRepository: pushes and fetches are reported per
// repository, a bad copy in one repository as that repository's failure,
// and a file the repositories do not hold as nothing.
func TestObserverPerRepository(t *testing.T) {
	f := newFixture(t, "")
	second := t.TempDir()
	y := fmt.Sprintf("cluster: c1\nnode: {name: n1}\npostgres: {pgdata: %s}\nrepos: [{name: r1, url: 'file://%s'}, {name: r2, url: 'file://%s'}]\nencryption: {identity_file: %s}\n",
		f.pgdata, f.repo, second, f.identity)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	sh.SetObserver(rec)
	ctx := context.Background()
	name, _ := f.segment(t, 3)
	if err := sh.Push(ctx, filepath.Join(f.pgwal, name)); err != nil {
		t.Fatal(err)
	}
	if rec.pushOK["r1"] != 1 || rec.pushOK["r2"] != 1 || len(rec.pushFail) != 0 {
		t.Fatalf("after one push: %s", rec)
	}
	// r2 cannot store the next file (a directory where its object must
	// go): its push fails; r1's succeeds, or is cancelled when r2 failed
	// first, and never counts as r1's failure.
	os.Rename(filepath.Join(f.pgwal, "archive_status", name+".ready"), filepath.Join(f.pgwal, "archive_status", name+".done"))
	name4, _ := f.segment(t, 4)
	if err := os.MkdirAll(filepath.Join(second, "c1", "wal", name4[:8], name4, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := sh.Push(ctx, filepath.Join(f.pgwal, name4)); err == nil {
		t.Fatal("push into a repository that cannot store it succeeded")
	}
	if ok := rec.pushOK["r1"]; (ok != 1 && ok != 2) || rec.pushFail["r2"] != 1 || rec.pushFail["r1"] != 0 || rec.pushOK["r2"] != 1 {
		t.Fatalf("after a push r2 refused: %s", rec)
	}
	// A bad copy in r1: r1's fetch fails, r2's succeeds.
	obj := filepath.Join(f.repo, "c1", "wal", name[:8], name)
	b, _ := os.ReadFile(obj)
	b[len(b)-10] ^= 1
	os.WriteFile(obj, b, 0o600)
	dest := filepath.Join(t.TempDir(), "out")
	if err := sh.Fetch(ctx, name, dest); err != nil {
		t.Fatal(err)
	}
	if rec.fetchFail["r1"] != 1 || rec.fetchOK["r2"] != 1 {
		t.Fatalf("after a fetch with a bad copy in r1: %s", rec)
	}
	// Not in the archive: no fetch reported.
	if err := sh.Fetch(ctx, "000000010000000000000063", dest); err == nil {
		t.Fatal("fetched a file never pushed")
	}
	if rec.fetchFail["r1"] != 1 || rec.fetchFail["r2"] != 0 || rec.fetchOK["r1"] != 0 || rec.negative {
		t.Fatalf("after a fetch of a missing file: %s", rec)
	}
}
