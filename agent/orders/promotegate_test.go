package orders

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/pgctl"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
)

// TestPromoteSettlesGate: with lease-gated commits on, a standby whose
// synchronous_standby_names does not name the commit gate (its gate never
// connected) gets it before pg_promote: the new primary's first commit
// waits for the gate instead of going through ungated.
func TestPromoteSettlesGate(t *testing.T) {
	pg := pgtest.New(t, pgtest.Options{Conf: map[string]string{"max_wal_senders": "10"}})
	pg.Start(t)
	sb := pgtest.Empty(t, pgtest.Options{})
	pg.Run(t, "pg_basebackup", "-D", sb.PGData, "-R", "-X", "stream", "-d", pg.DSN())
	sb.AppendConf(t, sb.LocalConf())
	sb.AppendConf(t, map[string]string{"hot_standby": "on"})
	sb.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := OpenPGPromotion(ctx, pgctl.New(pgctl.Config{BinDir: sb.BinDir, PGData: sb.PGData, DSN: sb.DSN()}), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.(*pgPromotion).gate = true
	if done, err := p.Promote(ctx, 30*time.Second); err != nil || !done {
		t.Fatalf("promote: %v %v", done, err)
	}
	if got := sb.QueryString(t, "SELECT current_setting('synchronous_standby_names')"); !commitgate.IsGate(got, commitgate.DefaultAppName) {
		t.Fatalf("promoted with synchronous_standby_names %q, want the commit gate", got)
	}
	conn := sb.Conn(t)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if _, err := conn.Exec(wctx, "SET synchronous_commit = on; CREATE TABLE t (v int)"); err == nil {
		t.Fatal("the new primary's first commit went through with no commit gate connected")
	}
}
