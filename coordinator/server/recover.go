package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/coordinator/fsm"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
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
//
// Every other voter of the last configuration this coordinator knows is
// asked first (RaftIndex on its API address, else a connection to its
// Raft address); when one answers, the others may still form a quorum and
// recovering would make a second cluster beside theirs (split brain), so
// Recover refuses unless force.
func Recover(cfg *config.Config, log *slog.Logger, voters []Voter, force bool) (uint64, error) {
	return recoverCluster(cfg, log, voters, force, askPeer(cfg))
}

// peerAsker reports whether the coordinator name (API address api, Raft
// address raftAddr) runs: "" when it does not answer, else what answered.
type peerAsker func(ctx context.Context, name, api, raftAddr string) string

// askPeer asks over the coordinators' own TLS: a RaftIndex answer (or a
// refusal from a running coordinator) on the API address, else a TCP
// connection accepted on the Raft address.
func askPeer(cfg *config.Config) peerAsker {
	tc, tlsErr := tlsutil.ClientConfig(cfg.TLS)
	return func(ctx context.Context, name, api, raftAddr string) string {
		if api != "" && tlsErr == nil {
			conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(credentials.NewTLS(tc.Clone())))
			if err == nil {
				r, err := pgdrv1.NewCoordinatorServiceClient(conn).RaftIndex(ctx, &pgdrv1.RaftIndexRequest{})
				conn.Close()
				switch code := status.Code(err); {
				case err == nil:
					return fmt.Sprintf("%s answers at %s (%s, raft log index %d)", name, api, r.GetRaftState(), r.GetLastLogIndex())
				case code != codes.Unavailable && code != codes.DeadlineExceeded && code != codes.Canceled:
					return fmt.Sprintf("%s answers at %s: %v", name, api, err)
				}
			}
		}
		if raftAddr != "" {
			var d net.Dialer
			if c, err := d.DialContext(ctx, "tcp", raftAddr); err == nil {
				c.Close()
				return fmt.Sprintf("%s's raft address %s accepts connections", name, raftAddr)
			}
		}
		return ""
	}
}

func recoverCluster(cfg *config.Config, log *slog.Logger, voters []Voter, force bool, ask peerAsker) (uint64, error) {
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
	// The WAL does not close its meta database; closing it here lets the
	// data directory be opened again in this process.
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	wal, err := raftwal.Open(walDir, raftwal.WithMetaStore(meta))
	if err != nil {
		return 0, fmt.Errorf("raft log in %s: %w", cfg.DataDir, err)
	}
	defer wal.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hl)
	if err != nil {
		return 0, fmt.Errorf("raft snapshots in %s: %w", cfg.DataDir, err)
	}
	if err := checkPeersDown(cfg, log, hl, wal, snaps, force, ask); err != nil {
		return 0, err
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

// checkPeersDown asks every other voter of the last configuration in the
// data directory whether it runs, and refuses (unless force) when one
// answers.
func checkPeersDown(cfg *config.Config, log *slog.Logger, hl hclog.Logger, wal *raftwal.WAL, snaps raft.SnapshotStore, force bool, ask peerAsker) error {
	// GetConfiguration restores the newest snapshot into f (for the
	// coordinators' API addresses) and reads the configuration entries of
	// the log; it starts nothing and writes nothing.
	f := fsm.New(log.With("component", "fsm"), fsm.Options{})
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.Raft.Advertise))
	defer trans.Close()
	conf, err := raft.GetConfiguration(raftConfig(cfg, hl), f, wal, wal, snaps, trans)
	if err != nil {
		return fmt.Errorf("reading the last raft configuration in %s: %w", cfg.DataDir, err)
	}
	api := map[string]string{}
	for _, p := range cfg.Bootstrap {
		api[p.Name] = p.APIAddress
	}
	for _, c := range f.Coordinators() {
		if c.GetApiAddress() != "" {
			api[c.GetName()] = c.GetApiAddress()
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var answered, asked []string
	for _, sv := range conf.Servers {
		name := string(sv.ID)
		if name == cfg.Name {
			continue
		}
		asked = append(asked, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if a := ask(ctx, name, api[name], string(sv.Address)); a != "" {
				mu.Lock()
				answered = append(answered, a)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(answered)
	switch {
	case len(answered) == 0:
		return nil
	case force:
		log.Warn("recovering although other coordinators of the last configuration answer (--force)", "answered", strings.Join(answered, "; "))
		return nil
	}
	return fmt.Errorf("other coordinators of the last raft configuration still run: %s. They may still form a quorum, and recovering %s would make a second, one-voter cluster beside theirs (split brain, two leaders). "+
		"Stop every coordinator that is to be replaced (asked: %s); if they cannot be stopped and you are sure they no longer form a quorum, rerun with --force",
		strings.Join(answered, "; "), cfg.Name, strings.Join(asked, ", "))
}
