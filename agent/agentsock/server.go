package agentsock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Handler carries out one request of a trusted client. Its error's text
// is the answer the client sees (Call returns it as its error); nil
// answers ok.
type Handler func(ctx context.Context, req Request) error

// Server is the daemon's end of the agent socket: it accepts connections
// of trusted users only and answers each one-line request with one line.
type Server struct {
	path    string
	ln      net.Listener
	clients []uint32
	handle  Handler
	log     *slog.Logger

	closeOnce sync.Once
}

// Listen binds the unix socket at path (see listen for what it refuses)
// for a Server whose clients may be only the users clients (checked per
// connection with SO_PEERCRED) and whose requests go to handle. Run
// serves it; a Server that will not be run is given back with Close.
func Listen(path string, clients []uint32, handle Handler, log *slog.Logger) (*Server, error) {
	ln, err := listen(path)
	if err != nil {
		return nil, err
	}
	return &Server{path: path, ln: ln, clients: append([]uint32(nil), clients...), handle: handle, log: log}, nil
}

// Run serves connections until ctx ends (or Close is called), waits for
// the requests in progress to be answered, then removes the socket.
// Each request's handler gets ctx.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			s.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err := checkPeer(conn, s.clients); err != nil {
			s.log.Warn("refusing a connection on the agent socket", "err", err)
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serve(ctx, conn)
		}()
	}
	wg.Wait()
	s.Close()
	return nil
}

// Close stops listening and removes the socket. It may be called more
// than once, and while Run runs (Run then returns).
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.ln.Close()
		if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	})
	return err
}

// serve reads one request from conn, hands it to the handler and writes
// the answer.
func (s *Server) serve(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req Request
	resp := Response{OK: true}
	if err := json.Unmarshal(line, &req); err != nil {
		resp = Response{Error: "bad request: " + err.Error()}
	} else if err := s.handle(ctx, req); err != nil {
		resp = Response{Error: err.Error()}
	}
	b, _ := json.Marshal(resp)
	conn.Write(append(b, '\n'))
}

// listen binds the unix socket (mode 0600: only the same user may hand
// work over), replacing a stale socket file but never a live daemon's.
func listen(path string) (net.Listener, error) {
	// The socket's directory and a socket left there must be this user's
	// (socketsafety.go): the failsafe acknowledgement and the watchdog's
	// pid file live beside the socket too.
	self := []uint32{uint32(os.Geteuid())}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	if err := checkSocketDir(filepath.Dir(path), self); err != nil {
		return nil, fmt.Errorf("agent socket %s: %w", path, err)
	}
	if err := checkSocketFile(path, self); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("agent socket %s: %w (remove it if it is stale)", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent daemon is already listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
