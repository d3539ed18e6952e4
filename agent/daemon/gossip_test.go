package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgdr/pgdr/agent/walship"
	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/gossip"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestGossip: with gossip.bind the daemon joins the pool and tells it what
// it is (an agent of its cluster, and where its HTTP API is).
func TestGossip(t *testing.T) {
	dir := t.TempDir()
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "gossip.key")
	os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	seedAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	agentAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seed, err := gossip.Start(ctx, gossip.Config{Bind: seedAddr, KeyFile: keyFile, Meta: gossip.Meta{Kind: gossip.KindCoordinator, Name: "c1"}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()

	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster: main
node: {name: pg-a2, region: r1}
postgres: {pgdata: %s, dsn: 'host=127.0.0.1 port=1'}
repos: [{url: 'file://%s'}]
encryption: {disabled: true}
agent: {socket: %s}
health: {listen: %q}
gossip: {bind: %q, join: [%q], key_file: %s}
`, testutil.FakePGData(t, 1), t.TempDir(), filepath.Join(dir, "agent.sock"), httpAddr, agentAddr, seedAddr, keyFile)))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := walship.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, sh, log)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	testutil.WaitFor(t, 30*time.Second, "the agent in the pool", func() (bool, error) {
		for _, p := range seed.Members() {
			if p.Meta.Kind == gossip.KindAgent {
				return p.Meta.Name == "pg-a2" && p.Meta.Cluster == "main" && p.Meta.Region == "r1" && p.Meta.API == "http://"+httpAddr && p.State == gossip.StateAlive, fmt.Errorf("peer %+v", p)
			}
		}
		return false, fmt.Errorf("members %+v", seed.Members())
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
