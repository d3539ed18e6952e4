package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
)

// AheadInterval is how often the daemon looks for ready WAL to push ahead.
const AheadInterval = 200 * time.Millisecond

// Daemon is the agent process.
type Daemon struct {
	cfg     *config.Config
	shipper *walship.Shipper
	log     *slog.Logger
}

// New builds a daemon; Run serves until ctx ends.
func New(cfg *config.Config, shipper *walship.Shipper, log *slog.Logger) *Daemon {
	return &Daemon{cfg: cfg, shipper: shipper, log: log}
}

// Run listens on the configured socket, pushes ready WAL ahead, and serves
// one-shot commands until ctx is cancelled.
func (d *Daemon) Run(ctx context.Context) error {
	ln, err := listen(d.cfg.Agent.Socket)
	if err != nil {
		return err
	}
	d.log.Info("agent daemon listening", "socket", d.cfg.Agent.Socket, "cluster", d.cfg.Cluster, "node", d.cfg.Node.Name)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.pushAheadLoop(ctx)
	}()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			d.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.serve(ctx, conn)
		}()
	}
	wg.Wait()
	os.Remove(d.cfg.Agent.Socket)
	d.log.Info("agent daemon stopped")
	return nil
}

// listen binds the unix socket (mode 0600: only the same user may hand
// work over), replacing a stale socket file but never a live daemon's.
func listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent daemon is already listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
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

func (d *Daemon) pushAheadLoop(ctx context.Context) {
	pgwal := filepath.Join(d.cfg.Postgres.PGData, "pg_wal")
	t := time.NewTicker(AheadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.shipper.PushAhead(ctx, pgwal, d.cfg.WAL.PushConcurrency)
		}
	}
}

func (d *Daemon) serve(ctx context.Context, conn net.Conn) {
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
	} else if err := d.handle(ctx, req); err != nil {
		resp = Response{Error: err.Error()}
	}
	b, _ := json.Marshal(resp)
	conn.Write(append(b, '\n'))
}

func (d *Daemon) handle(ctx context.Context, req Request) error {
	pgwal := filepath.Join(d.cfg.Postgres.PGData, "pg_wal")
	switch req.Op {
	case "wal-push":
		if !within(req.Path, pgwal) {
			return fmt.Errorf("wal-push: %s is not in this node's pg_wal (%s)", req.Path, pgwal)
		}
		return d.shipper.Push(ctx, req.Path)
	case "wal-prefetch":
		if !within(filepath.Join(req.PGWal, "x"), pgwal) {
			return fmt.Errorf("wal-prefetch: %s is not this node's pg_wal (%s)", req.PGWal, pgwal)
		}
		go func() {
			if err := d.shipper.Prefetch(ctx, req.PGWal, req.After, req.SegmentSize); err != nil {
				d.log.Warn("prefetch", "after", req.After, "err", err)
			}
		}()
		return nil
	}
	return fmt.Errorf("unknown operation %q", req.Op)
}

// within reports whether path is directly inside dir, comparing resolved
// directories so symlinked data directories still match.
func within(path, dir string) bool {
	pd, err1 := filepath.EvalSymlinks(filepath.Dir(path))
	dd, err2 := filepath.EvalSymlinks(dir)
	if err1 != nil || err2 != nil {
		return filepath.Dir(path) == dir
	}
	return pd == dd && !strings.Contains(filepath.Base(path), string(filepath.Separator))
}
