package walrecv

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/repo"
)

// flakyUploader fails every call while down.
type flakyUploader struct {
	Uploader
	down atomic.Bool
}

var errRepoDown = errors.New("repository unreachable")

func (f *flakyUploader) PushSegment(ctx context.Context, name string, data []byte) error {
	if f.down.Load() {
		return errRepoDown
	}
	return f.Uploader.PushSegment(ctx, name, data)
}

func (f *flakyUploader) PushPartial(ctx context.Context, name string, data []byte) error {
	if f.down.Load() {
		return errRepoDown
	}
	return f.Uploader.PushPartial(ctx, name, data)
}

func (f *flakyUploader) DeletePartial(ctx context.Context, name string) error {
	if f.down.Load() {
		return errRepoDown
	}
	return f.Uploader.DeletePartial(ctx, name)
}

// TestHistoryUploadDoesNotGateStreaming: a receiver that starts on a
// timeline > 1 while the repository is unreachable streams anyway (a
// synchronous one would otherwise block every commit); the .history file
// waits in the spool and is archived once the repository is back.
func TestHistoryUploadDoesNotGateStreaming(t *testing.T) {
	e := newEnv(t, nil)
	sb := standbyOf(t, e)
	e.pg.Stop(t, "fast")
	sb.Run(t, "pg_ctl", "-D", sb.PGData, "-w", "-t", "60", "promote")
	dsn := sb.DSN()
	e.primary.Store(&dsn)
	up := &flakyUploader{Uploader: e.sh}
	up.down.Store(true)
	r := e.run(t, Config{UploadInterval: 100 * time.Millisecond}, up)
	waitFor(t, 10*time.Second, "the receiver streams from the timeline-2 primary while the repository is down", func() bool {
		return r.Status().Connected && r.Status().Timeline == 2
	})
	waitFor(t, 10*time.Second, "failed uploads are counted", func() bool { return r.Status().UploadFailures > 0 })
	up.down.Store(false)
	hist, err := os.ReadFile(filepath.Join(sb.PGData, "pg_wal", "00000002.history"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "00000002.history is archived", func() bool {
		h, _, ok := e.header(t, repo.WALKey("c1", "00000002.history"))
		return ok && bytes.Equal(h.PlainSHA256, sum(hist))
	})
}
