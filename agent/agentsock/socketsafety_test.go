package agentsock

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// otherUID is a user the tests give files to (they run as root).
const otherUID = 54321

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
}

// okSayer listens on path and answers {"ok":true} to every request, as
// anyone who binds the socket first could; it counts the requests.
func okSayer(t *testing.T, path string) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := bufio.NewReader(c).ReadBytes('\n'); err == nil {
				n.Add(1)
				c.Write([]byte("{\"ok\":true}\n"))
			}
			c.Close()
		}
	}()
	return &n
}

// TestCallRefusesUntrustedSocket: Call believes only a daemon of a trusted
// user in a directory no one else can write; otherwise it sends nothing
// and returns ErrUntrustedSocket inside ErrNoDaemon, so that wal-push
// pushes the segment itself (issue 13 item 5).
func TestCallRefusesUntrustedSocket(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	req := Request{Op: "wal-push", Path: "/pg_wal/000000010000000000000001"}
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, dir, sock string)
		trust []uint32 // besides this process's user
		want  string   // "" for a trusted daemon
	}{
		{name: "own socket in own directory"},
		{name: "directory writable by all, like /tmp", setup: func(t *testing.T, dir, _ string) { mustChmod(t, dir, 0o1777) },
			want: "writable by every user"},
		{name: "directory of another user", setup: func(t *testing.T, dir, _ string) { mustChown(t, dir, otherUID) },
			want: "directory"},
		{name: "directory of a trusted user", setup: func(t *testing.T, dir, _ string) { mustChown(t, dir, otherUID) },
			trust: []uint32{otherUID}},
		{name: "socket file of another user", setup: func(t *testing.T, _, sock string) { mustChown(t, sock, otherUID) },
			want: "belongs to uid 54321"},
		{name: "process of another user", setup: func(t *testing.T, _, sock string) { mustChown(t, sock, otherUID) },
			trust: []uint32{otherUID}, want: "runs as uid 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "agent.sock")
			n := okSayer(t, sock)
			if c.setup != nil {
				c.setup(t, dir, sock)
			}
			var err error
			if c.want == "runs as uid 0" {
				// As a client of another user sees this root daemon:
				// trusting otherUID, not root.
				err = call(ctx, sock, req, c.trust)
			} else {
				err = Call(ctx, sock, req, c.trust...)
			}
			if c.want == "" {
				if err != nil || n.Load() != 1 {
					t.Fatalf("a trusted daemon: %v (%d requests)", err, n.Load())
				}
				return
			}
			checkRefused(t, err, n, c.want)
		})
	}
}

func checkRefused(t *testing.T, err error, n *atomic.Int64, want string) {
	t.Helper()
	if !errors.Is(err, ErrUntrustedSocket) || !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Call = %v, want ErrUntrustedSocket (in ErrNoDaemon) saying %q", err, want)
	}
	if n.Load() != 0 {
		t.Fatalf("%d requests reached the untrusted socket", n.Load())
	}
}

// TestListenRefusesUnsafeSocket: the daemon does not listen in a directory
// another user can write to or owns, nor take over a socket file of
// another user.
func TestListenRefusesUnsafeSocket(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, dir, sock string)
		want  string
	}{
		{"directory writable by all", func(t *testing.T, dir, _ string) { mustChmod(t, dir, 0o1777) }, "writable by every user"},
		{"directory of another user", func(t *testing.T, dir, _ string) { mustChown(t, dir, otherUID) }, "belongs to uid 54321"},
		{"socket file of another user", func(t *testing.T, _, sock string) {
			if err := os.WriteFile(sock, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			mustChown(t, sock, otherUID)
		}, "not a socket"},
		{"a live socket of another user", func(t *testing.T, _, sock string) {
			okSayer(t, sock)
			mustChown(t, sock, otherUID)
		}, "belongs to uid 54321"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, "agent.sock")
			c.setup(t, dir, sock)
			ln, err := listen(sock)
			if err == nil {
				ln.Close()
				t.Fatal("listen accepted an unsafe socket")
			}
			if !errors.Is(err, ErrUntrustedSocket) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("listen = %v, want ErrUntrustedSocket saying %q", err, c.want)
			}
		})
	}
	// A missing directory is made for the agent's user alone.
	sock := filepath.Join(t.TempDir(), "pgdr", "agent.sock")
	ln, err := listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the socket's directory: %v %v, want mode 0700", fi.Mode(), err)
	}
}

// TestCheckPeer: the daemon refuses a client of a user it does not trust.
func TestCheckPeer(t *testing.T) {
	a, b, err := unixPair(t)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if err := checkPeer(a, []uint32{uint32(os.Geteuid())}); err != nil {
		t.Fatalf("own user refused: %v", err)
	}
	if err := checkPeer(a, []uint32{otherUID}); !errors.Is(err, ErrUntrustedSocket) {
		t.Fatalf("checkPeer with the peer's user untrusted = %v, want ErrUntrustedSocket", err)
	}
}

func unixPair(t *testing.T) (net.Conn, net.Conn, error) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, nil, err
	}
	s, err := ln.Accept()
	return s, c, err
}

func mustChmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mustChown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Lchown(p, uid, otherUID); err != nil {
		t.Fatal(err)
	}
}
