package server

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
)

// Voter is one member of the configuration Recover writes.
type Voter struct {
	Name, RaftAddress string
}

// ParseVoters reads "name=host:port,name=host:port".
func ParseVoters(s string) ([]Voter, error) {
	var out []Voter
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, addr, ok := strings.Cut(item, "=")
		if !ok || !nameRE.MatchString(name) {
			return nil, fmt.Errorf("voter %q: want name=host:port", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("voter %q: %q is not host:port", item, addr)
		}
		out = append(out, Voter{Name: name, RaftAddress: addr})
	}
	return out, nil
}

// Recover rewrites the Raft configuration in this coordinator's data
// directory to voters (this coordinator alone when empty), keeping every
// entry of its log and snapshots: the way out when a quorum of voters is
// lost for good. The coordinator must be stopped. Entries that were in
// flight but not committed become committed (raft.RecoverCluster). It
// returns the index the recovered state reaches.
func Recover(cfg *config.Config, log *slog.Logger, voters []Voter) (uint64, error) {
	if len(voters) == 0 {
		voters = []Voter{{Name: cfg.Name, RaftAddress: cfg.Raft.Advertise}}
	}
	self := false
	var servers []raft.Server
	for _, v := range voters {
		self = self || v.Name == cfg.Name
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v.Name), Address: raft.ServerAddress(v.RaftAddress)})
	}
	if !self {
		return 0, fmt.Errorf("the voters must include this coordinator (%s)", cfg.Name)
	}
	// A running coordinator holds its Raft port; recovering under it would
	// corrupt its log.
	ln, err := net.Listen("tcp", cfg.Raft.Bind)
	if err != nil {
		return 0, fmt.Errorf("raft.bind %s is in use (%w): stop this coordinator before recovering", cfg.Raft.Bind, err)
	}
	ln.Close()
	walDir := filepath.Join(cfg.DataDir, "raft-wal")
	if _, err := os.Stat(walDir); err != nil {
		return 0, fmt.Errorf("no raft log in %s (%w): there is nothing to recover on this coordinator", cfg.DataDir, err)
	}
	hl := hclogger(log, "raft", cfg.LogLevel)
	wal, err := raftwal.Open(walDir)
	if err != nil {
		return 0, fmt.Errorf("raft log in %s: %w", cfg.DataDir, err)
	}
	defer wal.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hl)
	if err != nil {
		return 0, fmt.Errorf("raft snapshots in %s: %w", cfg.DataDir, err)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.Raft.Advertise))
	defer trans.Close()
	// RecoverCluster replays the state into this FSM only to snapshot it;
	// the coordinator builds its own at the next start.
	f := fsm.New(log.With("component", "fsm"), fsm.Options{})
	if err := raft.RecoverCluster(raftConfig(cfg, hl), f, wal, wal, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
		return 0, fmt.Errorf("recovering the raft state in %s: %w", cfg.DataDir, err)
	}
	return f.LastIndex(), nil
}
