package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// receiver is a real local HTTP server that records what it gets and
// answers with the next scripted status (the last one repeats).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	codes  []int
	header http.Header // added to every answer
}

type received struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	t.Helper()
	r := &receiver{t: t, codes: codes, header: http.Header{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{req.Method, req.URL.Path, req.Header.Clone(), body})
		code := http.StatusAccepted
		if n := len(r.got); len(r.codes) > 0 {
			code = r.codes[min(n, len(r.codes))-1]
		}
		for k, v := range r.header {
			w.Header()[k] = v
		}
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// sleeper records the waits asked for instead of sleeping.
type sleeper struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeper) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

var t0 = time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)

func testOptions(s *sleeper) Options {
	return Options{Sleep: s.Sleep, Now: func() time.Time { return t0 }, Client: &http.Client{Timeout: 5 * time.Second}}
}

func testEvent(status Status) Event {
	ev := Event{
		IncidentID: "inc-42",
		DedupKey:   "failover/main",
		Cluster:    "main",
		Title:      "Failover of main: pg1 lost, pg2 promoted",
		Category:   "failover",
		Severity:   SeverityCritical,
		Status:     status,
		Timeline:   "19:00 pg1 unreachable; 19:00:20 pg2 promoted (epoch 7)",
		Source:     "coord-1",
		OpenedAt:   t0,
		UpdatedAt:  t0.Add(time.Minute),
		Link:       "https://pgdr.example/incidents/inc-42",
	}
	if status == StatusResolved {
		ev.ResolvedAt = t0.Add(10 * time.Minute)
	}
	return ev
}

// writeSecret writes a 0600 secret file and returns its path.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuffer collects a slog logger's output for the test to read.
type logBuffer struct{ testutil.SyncBuffer }

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// decodeJSON decodes into a generic value, failing the test on bad JSON.
func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatalf("receiver got invalid JSON %q: %v", b, err)
	}
}
