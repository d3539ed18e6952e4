package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/epoch"
	"github.com/pgdr/pgdr/agent/orders"
	"github.com/pgdr/pgdr/pkg/config"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

type fakeExecutor struct {
	err  error
	ctxs []context.Context
	got  []string
}

func (f *fakeExecutor) TakeDivergence(string) *pgdrv1.DivergenceSummary { return nil }

func (f *fakeExecutor) Order(ctx context.Context, cmd *pgdrv1.AgentCommand, _ time.Time) (string, error) {
	f.ctxs = append(f.ctxs, ctx)
	f.got = append(f.got, cmd.GetId())
	return "out", f.err
}

type fakeMonitor struct{ checks int }

func (m *fakeMonitor) Latest() *pgdrv1.HealthReport { return nil }
func (m *fakeMonitor) CheckNow(context.Context) *pgdrv1.HealthReport {
	m.checks++
	return &pgdrv1.HealthReport{}
}
func (m *fakeMonitor) Reported() <-chan struct{}  { return nil }
func (m *fakeMonitor) Received(string, time.Time) {}

type fakeClock struct{}

func (fakeClock) Forget()                          {}
func (fakeClock) Note(_, _, _ time.Time, _ string) {}
func (fakeClock) NoteSkew(time.Duration, string)   {}

// TestCarryOut: Ping and CheckNow are answered by the session and adopt
// their epoch; a command older than the known epoch is refused; orders go
// to the executor in the run context given, and a pending promotion is
// answered pending, not failed. Complete without a session says so.
func TestCarryOut(t *testing.T) {
	cfg := &config.Config{Cluster: "main"}
	cfg.Node.Name = "pg-a2"
	ex := &fakeExecutor{}
	mon := &fakeMonitor{}
	var ep epoch.Tracker
	s := New(cfg, Deps{Executor: ex, Monitor: mon, Epoch: &ep, LeaderClock: fakeClock{}})
	type key struct{}
	runCtx := context.WithValue(context.Background(), key{}, "run")

	if res := s.CarryOut(runCtx, &pgdrv1.AgentCommand{Id: "c1", Epoch: 5, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}, time.Now()); !res.Ok || res.Output != "pong" || res.Cluster != "main" || res.Node != "pg-a2" {
		t.Fatalf("ping: %+v", res)
	}
	if ep.Current() != 5 {
		t.Fatalf("ping's epoch not adopted: %d", ep.Current())
	}
	if res := s.CarryOut(runCtx, &pgdrv1.AgentCommand{Id: "c2", Epoch: 5, Kind: &pgdrv1.AgentCommand_CheckNow{CheckNow: &pgdrv1.CheckNow{}}}, time.Now()); !res.Ok || mon.checks != 1 || !strings.Contains(res.Output, "role=") {
		t.Fatalf("check_now: %+v (%d checks)", res, mon.checks)
	}
	if res := s.CarryOut(runCtx, &pgdrv1.AgentCommand{Id: "c3", Epoch: 4, Kind: &pgdrv1.AgentCommand_Ping{Ping: &pgdrv1.Ping{}}}, time.Now()); res.Ok || !strings.Contains(res.Error, "stale epoch 4: this agent knows epoch 5") {
		t.Fatalf("stale epoch: %+v", res)
	}
	promote := &pgdrv1.AgentCommand{Id: "p1", Epoch: 6, Kind: &pgdrv1.AgentCommand_Promote{Promote: &pgdrv1.Promote{}}}
	if res := s.CarryOut(runCtx, promote, time.Now()); !res.Ok || res.Output != "out" || len(ex.got) != 1 || ex.ctxs[0].Value(key{}) != "run" {
		t.Fatalf("order: %+v, executor got %v", res, ex.got)
	}
	if ep.Current() != 5 {
		t.Fatalf("the session adopted an order's epoch: %d (the executor does, once accepted)", ep.Current())
	}
	ex.err = fmt.Errorf("%w: pg_promote did not finish", orders.ErrPromotionPending)
	if res := s.CarryOut(runCtx, promote, time.Now()); res.Ok || !res.Pending || !strings.Contains(res.Error, "promotion pending") {
		t.Fatalf("pending promotion: %+v", res)
	}
	ex.err = errors.New("boom")
	if res := s.CarryOut(runCtx, promote, time.Now()); res.Ok || res.Pending || res.Error != "boom" {
		t.Fatalf("failed order: %+v", res)
	}
	if s.Client() != nil {
		t.Fatal("a client without a session")
	}
	if err := s.Complete(context.Background(), &pgdrv1.CommandResult{Id: "run-1", Ok: true}); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Complete without a session: %v", err)
	}
}

// TestAPIURL: health.advertise, else health.listen, else none.
func TestAPIURL(t *testing.T) {
	cfg := &config.Config{}
	if u := APIURL(cfg); u != "" {
		t.Fatalf("none: %q", u)
	}
	cfg.Health.Listen = "127.0.0.1:8008"
	if u := APIURL(cfg); u != "http://127.0.0.1:8008" {
		t.Fatalf("listen: %q", u)
	}
	cfg.Health.Advertise = "db1:8008"
	if u := APIURL(cfg); u != "http://db1:8008" {
		t.Fatalf("advertise: %q", u)
	}
}

type fakeKeys struct{}

func (fakeKeys) PublicKey() []byte { return nil }
func (fakeKeys) Enabled() bool     { return false }

// TestMemberSyncReceiver: an agent whose WAL receiver is synchronous
// registers its application name for the leader's synchronous mode; an
// asynchronous or disabled one registers none.
func TestMemberSyncReceiver(t *testing.T) {
	for _, tc := range []struct {
		enabled, sync bool
		want          string
	}{{true, true, "pg-a2_walrecv"}, {true, false, ""}, {false, false, ""}} {
		cfg := &config.Config{Cluster: "main"}
		cfg.Node.Name = "pg-a2"
		cfg.WAL.Receive.Enabled, cfg.WAL.Receive.Synchronous = tc.enabled, tc.sync
		s := New(cfg, Deps{Monitor: &fakeMonitor{}, Failsafe: fakeKeys{}, Watchdog: fakeKeys{}})
		if got := s.member().SyncReceiver; got != tc.want {
			t.Errorf("enabled %v synchronous %v: sync_receiver %q, want %q", tc.enabled, tc.sync, got, tc.want)
		}
	}
}
