package server

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/pgdr/pgdr/coordinator/config"
)

// recoverConfig is a stopped coordinator c1 whose data directory holds the
// configuration {c1, c2, c3}.
func recoverConfig(t *testing.T) *config.Config {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bind := ln.Addr().String()
	ln.Close()
	cfg := &config.Config{Name: "c1", DataDir: t.TempDir()}
	cfg.Raft.Bind, cfg.Raft.Advertise = bind, bind
	cfg.Raft.HeartbeatTimeout.Duration, cfg.Raft.ElectionTimeout.Duration, cfg.Raft.LeaderLease.Duration = time.Second, time.Second, 500*time.Millisecond
	cfg.Raft.SnapshotThreshold, cfg.Raft.SnapshotInterval.Duration, cfg.Raft.TrailingLogs = 8192, 2*time.Minute, 10240
	cfg.Bootstrap = []config.Peer{{Name: "c2", APIAddress: "127.0.0.1:1"}}
	hl := hclogger(slog.New(slog.DiscardHandler), "raft", "")
	if err := os.Mkdir(filepath.Join(cfg.DataDir, "raft-wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	wal, err := raftwal.Open(filepath.Join(cfg.DataDir, "raft-wal"), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	defer wal.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hl)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(bind))
	defer trans.Close()
	conf := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "c1", Address: raft.ServerAddress(bind)},
		{Suffrage: raft.Voter, ID: "c2", Address: "127.0.0.1:2"},
		{Suffrage: raft.Voter, ID: "c3", Address: "127.0.0.1:3"},
	}}
	if err := raft.BootstrapCluster(raftConfig(cfg, hl), wal, wal, snaps, trans, conf); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRecoverRefusesWhilePeersAnswer: review D6. recover on a stopped
// coordinator while another voter of its last configuration still runs
// (the others may still form a quorum) would make a second, one-voter
// cluster: it is refused, naming who answered, and the data directory is
// left as it was; --force goes on.
func TestRecoverRefusesWhilePeersAnswer(t *testing.T) {
	cfg := recoverConfig(t)
	log := slog.New(slog.DiscardHandler)
	var mu sync.Mutex
	asked := map[string]string{}
	ask := func(_ context.Context, name, api, raftAddr string) string {
		mu.Lock()
		defer mu.Unlock()
		asked[name] = api + " " + raftAddr
		if name == "c2" {
			return "c2 answers at " + api
		}
		return ""
	}
	_, err := recoverCluster(cfg, log, nil, false, ask)
	if err == nil || !strings.Contains(err.Error(), "c2 answers") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("recover while c2 answers: %v, want a refusal naming c2 and --force", err)
	}
	if asked["c2"] != "127.0.0.1:1 127.0.0.1:2" || asked["c3"] != " 127.0.0.1:3" || len(asked) != 2 {
		t.Fatalf("peers asked: %v, want c2 and c3 of the last configuration at their addresses", asked)
	}
	// Unchanged: recovering again with nobody answering still finds the old configuration.
	clear(asked)
	if _, err := recoverCluster(cfg, log, nil, false, func(_ context.Context, name, _, _ string) string {
		mu.Lock()
		defer mu.Unlock()
		asked[name] = "x"
		return ""
	}); err != nil {
		t.Fatalf("recover with nobody answering: %v", err)
	}
	if len(asked) != 2 {
		t.Fatalf("the refused recover changed the configuration: asked %v", asked)
	}
	// Now c1 is alone: nobody else is asked; --force is not needed.
	clear(asked)
	if _, err := recoverCluster(cfg, log, nil, false, ask); err != nil || len(asked) != 0 {
		t.Fatalf("recover of a one-voter configuration: %v (asked %v)", err, asked)
	}
}

// TestRecoverForced: --force recovers although a peer answers.
func TestRecoverForced(t *testing.T) {
	cfg := recoverConfig(t)
	if _, err := recoverCluster(cfg, slog.New(slog.DiscardHandler), nil, true, func(_ context.Context, name, _, _ string) string {
		return name + " answers"
	}); err != nil {
		t.Fatalf("forced recover: %v", err)
	}
}
