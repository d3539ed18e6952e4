package agentsock

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs a Server on a fresh socket with clients trusted, answering
// with handle; it stops at the end of the test.
func serve(t *testing.T, clients []uint32, handle Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "agent.sock")
	srv, err := Listen(sock, clients, handle, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop")
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Error("the socket was left behind")
		}
	})
	return sock
}

// TestServer: a request of a trusted client reaches the handler and its
// answer (success or the handler's error text) reaches the client.
func TestServer(t *testing.T) {
	var got atomic.Value
	sock := serve(t, []uint32{uint32(os.Geteuid())}, func(_ context.Context, req Request) error {
		got.Store(req)
		if req.Op == "fail" {
			return errors.New("the handler says no")
		}
		return nil
	})
	ctx := context.Background()
	want := Request{Op: "wal-prefetch", PGWal: "/pg_wal", After: "000000010000000000000001", SegmentSize: 16 << 20}
	if err := Call(ctx, sock, want); err != nil {
		t.Fatalf("Call: %v", err)
	}
	if r, _ := got.Load().(Request); r != want {
		t.Fatalf("the handler got %+v, want %+v", r, want)
	}
	err := Call(ctx, sock, Request{Op: "fail"})
	if err == nil || errors.Is(err, ErrNoDaemon) || err.Error() != "the handler says no" {
		t.Fatalf("Call of a failing request = %v, want the handler's error", err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the socket: %v %v, want mode 0600", fi.Mode(), err)
	}
}

// TestServerRefusesUntrustedClient: a client of a user the server does not
// trust is hung up on before its request is read; the handler never runs
// and the client, seeing no answer, works alone (ErrNoDaemon).
func TestServerRefusesUntrustedClient(t *testing.T) {
	var handled atomic.Int64
	sock := serve(t, []uint32{otherUID}, func(context.Context, Request) error {
		handled.Add(1)
		return nil
	})
	err := Call(context.Background(), sock, Request{Op: "wal-push", Path: "/pg_wal/000000010000000000000001"})
	// The hang-up comes before or after the request is written: either
	// way there is no answer.
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Call by an untrusted user = %v, want ErrNoDaemon", err)
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("%d requests of an untrusted user reached the handler", n)
	}
}
