package agentsock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Request is one line of JSON a one-shot command sends over the socket.
type Request struct {
	Op          string `json:"op"` // wal-push, wal-prefetch
	Path        string `json:"path,omitempty"`
	PGWal       string `json:"pgwal,omitempty"`
	After       string `json:"after,omitempty"`
	SegmentSize uint64 `json:"segment_size,omitempty"`
}

// Response is the daemon's one-line JSON answer.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// ErrNoDaemon means no daemon answers on the socket; the caller works alone.
var ErrNoDaemon = errors.New("no agent daemon on the socket")

// Call sends req to the daemon listening on socket and waits for its answer.
// It returns ErrNoDaemon (wrapped) when nothing listens or the connection
// breaks before an answer, so the caller can do the work itself; a daemon
// that answers with a failure gives that failure as the error.
//
// Only a daemon of this process's user, or of a user in trust (see
// TrustedUIDs), is believed: the socket's directory must be theirs (or
// root's) and writable by no one else, the socket file theirs, and the
// process answering theirs (SO_PEERCRED). Otherwise Call sends nothing and
// returns ErrUntrustedSocket, wrapped in ErrNoDaemon.
func Call(ctx context.Context, socket string, req Request, trust ...uint32) error {
	return call(ctx, socket, req, append([]uint32{uint32(os.Geteuid())}, trust...))
}

// call is Call believing a daemon of the users uids only.
func call(ctx context.Context, socket string, req Request, uids []uint32) error {
	if err := checkSocketDir(filepath.Dir(socket), uids); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDaemon, err)
	}
	if err := checkSocketFile(socket, uids); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDaemon, err)
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoDaemon, err)
	}
	defer conn.Close()
	if err := checkPeer(conn, uids); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNoDaemon, socket, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%w: %v", ErrNoDaemon, err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: connection closed before an answer: %v", ErrNoDaemon, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("%w: bad answer: %v", ErrNoDaemon, err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	return nil
}
