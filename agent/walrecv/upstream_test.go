package walrecv

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// standbyOf starts a streaming standby of e's primary.
func standbyOf(t *testing.T, e *env) *pgtest.Cluster {
	t.Helper()
	sb := pgtest.Empty(t, pgtest.Options{})
	sb.Run(t, "pg_basebackup", "-D", sb.PGData, "-d", e.pg.DSN(), "-X", "stream", "-R", "-c", "fast")
	sb.AppendConf(t, sb.LocalConf())
	sb.Start(t)
	return sb
}

// run runs a receiver of cfg (its names, spool and retry interval set)
// uploading through up (nil: e's shipper) until the test ends.
func (e *env) run(t *testing.T, cfg Config, up Uploader) *Receiver {
	t.Helper()
	if up == nil {
		up = e.sh
	}
	cfg.AppName, cfg.Slot, cfg.SpoolDir, cfg.RetryInterval = AppName("n1"), DefaultSlot("n1"), e.spool, 100*time.Millisecond
	r := New(cfg, Deps{Primary: func(context.Context) (string, error) { return *e.primary.Load(), nil }, Upload: up,
		Log: slog.New(slog.NewTextHandler(tlog{t}, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// TestReceiverFollowsUpstreamChange: the node's primary_conninfo pointed
// at a standby (an old primary rejoined before this node's follow order),
// then the follow order points it at the primary, whose
// synchronous_standby_names names the receiver: the receiver ends its
// stream and streams from the primary, and the commit returns.
func TestReceiverFollowsUpstreamChange(t *testing.T) {
	e := newEnv(t, nil)
	sb := standbyOf(t, e)
	old := sb.DSN()
	e.primary.Store(&old)
	r := e.run(t, Config{}, nil)
	waitFor(t, 20*time.Second, "the receiver streams from the standby", func() bool { return r.Status().Connected })
	first := r.Status().Server
	e.pg.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = '"+AppName("n1")+"'")
	e.pg.Exec(t, "SELECT pg_reload_conf()")
	cur := e.pg.DSN()
	e.primary.Store(&cur)
	conn := e.pg.Conn(t)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if _, err := conn.Exec(cctx, "INSERT INTO t (v) VALUES ('x')"); err != nil {
		t.Fatalf("a commit on the primary did not return in 30s: the receiver still streams from %s (first %s): %v", r.Status().Server, first, err)
	}
}

// TestReceiverRefusesStandby: a receiver that must stream from the
// primary (a synchronous one) refuses a server in recovery.
func TestReceiverRefusesStandby(t *testing.T) {
	e := newEnv(t, nil)
	sb := standbyOf(t, e)
	old := sb.DSN()
	e.primary.Store(&old)
	r := e.run(t, Config{RequirePrimary: true}, nil)
	waitFor(t, 20*time.Second, "the receiver tried the standby", func() bool { return r.Status().Reconnects >= 2 })
	if st := r.Status(); st.Connected || !strings.Contains(st.LastError, "recovery") {
		t.Fatalf("the receiver streams from (or did not refuse) the standby: %+v", st)
	}
	cur := e.pg.DSN()
	e.primary.Store(&cur)
	waitFor(t, 20*time.Second, "the receiver streams from the primary", func() bool { return r.Status().Connected })
}
