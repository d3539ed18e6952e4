package repostat

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
	"github.com/pgdr/pgdr/pkg/storage"
	"github.com/pgdr/pgdr/pkg/storage/filestore"
)

// hangingStore lists nothing until the context ends (an S3 endpoint
// that accepts connections and never answers).
type hangingStore struct{ storage.ObjectStore }

func (h hangingStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	<-ctx.Done()
	return ctx.Err()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRoundTimeoutLogged: a round that runs out of time (Run gives each
// round a deadline) is a failure worth a warning, like any other; only
// the daemon stopping is not.
func TestRoundTimeoutLogged(t *testing.T) {
	fs, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	rd := New(cluster, []repo.Repo{{Name: "hung", Store: hangingStore{fs}}}, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rd.ReadOnce(ctx)
	if s := rd.Snapshots()[0]; s.Failures != 1 {
		t.Fatalf("snapshot %+v", s)
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("a round that timed out logged nothing: %q", logs.String())
	}
	// Stopping is not a failure worth a warning.
	var logs2 syncBuffer
	rd = New(cluster, []repo.Repo{{Name: "hung", Store: hangingStore{fs}}}, slog.New(slog.NewTextHandler(&logs2, nil)))
	stop, cancelStop := context.WithCancel(context.Background())
	cancelStop()
	rd.ReadOnce(stop)
	if strings.Contains(logs2.String(), "level=WARN") {
		t.Errorf("a round cut by the daemon stopping warned: %q", logs2.String())
	}
}
