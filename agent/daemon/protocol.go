package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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
func Call(ctx context.Context, socket string, req Request) error {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoDaemon, err)
	}
	defer conn.Close()
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
