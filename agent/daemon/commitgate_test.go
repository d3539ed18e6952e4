package daemon

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/commitgate"
	"github.com/pgdr/pgdr/agent/lease"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/testutil/pgtest"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// TestSetSynchronousGated: with failover.lease_gated_commits on, a
// set_synchronous order keeps the coordinator's value in
// pgdr.synchronous_standby_names (which the gate enforces and the report
// shows) and leaves PostgreSQL's own setting naming the gate alone, so
// commits keep waiting for the gate; with it off, the same order sets
// PostgreSQL's setting and puts the gate's away.
func TestSetSynchronousGated(t *testing.T) {
	pg := pgtest.New(t, pgtest.Options{})
	pg.Start(t)
	const value = `ANY 1 ("pg-a1", "pg-a3")`
	order := func() *pgdrv1.AgentCommand {
		return lateOrder(6, time.Now(), time.Minute, &pgdrv1.AgentCommand_SetSynchronous{SetSynchronous: &pgdrv1.SetSynchronous{Value: value}})
	}
	setting := func() (string, string) {
		return pg.QueryString(t, "SELECT current_setting('synchronous_standby_names')"),
			pg.QueryString(t, "SELECT coalesce(current_setting('"+commitgate.RequestedGUC+"', true), '')")
	}
	_, c := promoteDaemonCfg(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a2", now: time.Now}, func(cfg *config.Config) {
		cfg.Postgres.DSN, cfg.Postgres.PGData = pg.DSN(), pg.PGData
		cfg.Failover.LeaseGatedCommits = config.SwitchOn()
	})
	if res := c.carryOut(context.Background(), order()); !res.Ok {
		t.Fatalf("gated set_synchronous: %+v", res)
	}
	if own, req := setting(); !commitgate.IsGate(own, commitgate.DefaultAppName) || req != value {
		t.Fatalf("gated: synchronous_standby_names %q, %s %q; want the gate alone and %q", own, commitgate.RequestedGUC, req, value)
	}
	_, c = promoteDaemonCfg(t, &fakePromotion{}, &epochClient{epoch: 6, primary: "pg-a2", now: time.Now}, func(cfg *config.Config) {
		cfg.Postgres.DSN, cfg.Postgres.PGData = pg.DSN(), pg.PGData
	})
	if res := c.carryOut(context.Background(), order()); !res.Ok {
		t.Fatalf("set_synchronous: %+v", res)
	}
	if own, req := setting(); own != value || req != "" {
		t.Fatalf("not gated: synchronous_standby_names %q, %s %q; want %q and none", own, commitgate.RequestedGUC, req, value)
	}
}

// TestDaemonGatesCommits: a daemon with failover.lease_gated_commits on
// builds a gate on its own lease (through the failsafe): once running it
// makes PostgreSQL's setting name the gate, a commit waits while no lease
// is granted (a node just started or promoted), and goes through once the
// coordinator grants one.
func TestDaemonGatesCommits(t *testing.T) {
	pg := pgtest.New(t, pgtest.Options{Conf: map[string]string{"max_wal_senders": "10"}})
	pg.Start(t)
	cfg := testConfig(t, "coordinator: {addresses: ['127.0.0.1:1'], ca_file: /ca, token_file: /tok}\nfailover: {loop: 100ms, lease_ttl: 5s, safety_margin: 1s, lease_gated_commits: on}\n")
	cfg.Postgres.DSN, cfg.Postgres.PGData = pg.DSN(), pg.PGData
	d := New(cfg, nil, slog.New(slog.DiscardHandler))
	if d.gate == nil {
		t.Fatal("no commit gate with failover.lease_gated_commits on")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.gate.Run(ctx)
	conn := pg.Conn(t)
	testutil.WaitFor(t, 30*time.Second, "the setting to name the gate", func() (bool, error) {
		v, gated, err := commitgate.Requested(ctx, conn, commitgate.DefaultAppName)
		return err == nil && gated && v == "", nil
	})
	done := make(chan error, 1)
	wconn := pg.Conn(t)
	go func() {
		_, err := wconn.Exec(ctx, "CREATE TABLE t (v int)")
		done <- err
	}()
	testutil.WaitFor(t, 30*time.Second, "the commit to wait for the gate", func() (bool, error) {
		return pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1", nil
	})
	select {
	case err := <-done:
		t.Fatalf("a commit returned with no lease granted (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, body := get(t, d.Handler(), "GET", "/metrics"); !strings.Contains(body, `pgdr_agent_commit_gate_connected{cluster="main",node="pg-a2"} 1`) ||
		!strings.Contains(body, "pgdr_agent_commit_gate_withheld_total") {
		t.Errorf("/metrics has no connected commit gate:\n%s", body)
	}
	d.lease.Update(func(l *lease.Lease) {
		l.Answer("pg-a2", 1, time.Now(), &pgdrv1.RenewLeaseResponse{Granted: true})
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the commit did not return once the lease was granted")
	}
	// A set_synchronous naming a standby that is not there: once the order
	// is done the gate enforces it (it caches the setting between commits),
	// so the very next commit waits.
	c := &carrier{d: d, ctx: ctx}
	if res := c.carryOut(ctx, lateOrder(6, time.Now(), time.Minute, &pgdrv1.AgentCommand_SetSynchronous{SetSynchronous: &pgdrv1.SetSynchronous{Value: `FIRST 1 ("absent")`}})); !res.Ok {
		t.Fatalf("set_synchronous: %+v", res)
	}
	go func() {
		_, err := wconn.Exec(ctx, "INSERT INTO t VALUES (1)")
		done <- err
	}()
	testutil.WaitFor(t, 30*time.Second, "the commit to wait for the absent standby", func() (bool, error) {
		return pg.QueryString(t, "SELECT count(*)::text FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1", nil
	})
	select {
	case err := <-done:
		t.Fatalf("a commit returned although the required standby is absent (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	pg.Stop(t, "immediate") // the waiting commit ends before its connection is closed
	<-done
}
