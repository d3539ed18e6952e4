package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Node kinds carried in Meta.Kind.
const (
	KindAgent       = "agent"
	KindCoordinator = "coordinator"
)

// Peer states as Members reports them.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Meta is what a node tells the pool about itself.
type Meta struct {
	Kind    string `json:"k"`
	Name    string `json:"n"`
	Cluster string `json:"c,omitempty"`
	Region  string `json:"r,omitempty"`
	API     string `json:"a,omitempty"`
	// Features is a coordinator's feature level (0 for versions before
	// it was advertised): what replicated records it knows.
	Features int `json:"f,omitempty"`
}

// Config starts a pool member.
type Config struct {
	// Name is unique in the pool; NodeName builds the conventional one.
	Name string
	// Bind is host:port for gossip (UDP and TCP).
	Bind string
	// Join lists host:port of members to join; empty starts a new pool.
	Join []string
	// KeyFile holds the shared key, base64 of 16, 24 or 32 bytes.
	KeyFile string
	Meta    Meta
	// Profile picks memberlist's timers: "lan" (default), "wan", or "local"
	// (loopback labs: fast probes, failures seen within a second or two).
	Profile string
	Logger  *slog.Logger
	// Tune shortens memberlist's timers (for loopback labs and tests).
	Tune func(*memberlist.Config)
}

// Peer is one member of the pool as this node sees it.
type Peer struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	State string `json:"state"`
	Meta  Meta   `json:"meta"`
}

// NodeName is the pool name of a node: kind/cluster/name for agents,
// kind/name for coordinators.
func NodeName(m Meta) string {
	if m.Kind == KindAgent {
		return m.Kind + "/" + m.Cluster + "/" + m.Name
	}
	return m.Kind + "/" + m.Name
}

// GenerateKey returns a new random 32-byte key, base64 encoded, for a key file.
func GenerateKey() (string, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// LoadKey reads a key file written by GenerateKey.
func LoadKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("gossip key %s: not base64: %w", path, err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("gossip key %s: %d bytes, want 16, 24 or 32", path, len(k))
}

// Pool is this node's membership in the gossip pool.
type Pool struct {
	ml     *memberlist.Memberlist
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	seen     map[string]Peer
	joined   bool
	joinErr  error
	closed   bool
	changeCh chan struct{}
}

type delegate struct {
	meta []byte
	p    *Pool
}

func (d *delegate) NodeMeta(limit int) []byte                  { return d.meta }
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// memberlist passes a copy of the node whose State field is not kept up to
// date, so the event itself says the state: a leave is a failure or a
// graceful departure (both "dead" to the pool's users).
func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.p.record(n, StateAlive) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.p.record(n, StateDead) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.p.record(n, StateAlive) }

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return StateAlive
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateDead:
		return StateDead
	case memberlist.StateLeft:
		return StateLeft
	}
	return "unknown"
}

func peerOf(n *memberlist.Node) Peer {
	p := Peer{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: stateName(n.State)}
	_ = json.Unmarshal(n.Meta, &p.Meta) // a peer with unreadable meta is still a peer
	return p
}

func (p *Pool) record(n *memberlist.Node, state string) {
	peer := peerOf(n)
	peer.State = state
	p.mu.Lock()
	p.seen[n.Name] = peer
	p.mu.Unlock()
	select {
	case p.changeCh <- struct{}{}:
	default:
	}
}

// Start joins (or starts) the pool. Joining happens in the background and
// is retried until it succeeds or ctx ends; a wrong key never joins.
func Start(ctx context.Context, cfg Config) (*Pool, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = NodeName(cfg.Meta)
	}
	host, portStr, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip: bind %q: %w", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip: bind %q: bad port", cfg.Bind)
	}
	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, err
	}
	if len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: node metadata is %d bytes, limit %d", len(meta), memberlist.MetaMaxSize)
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
	case "wan":
		mc = memberlist.DefaultWANConfig()
	case "local":
		mc = memberlist.DefaultLocalConfig()
	default:
		return nil, fmt.Errorf("gossip: profile %q: want lan, wan or local", cfg.Profile)
	}
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	if cfg.KeyFile != "" {
		k, err := LoadKey(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		mc.SecretKey = k
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	lg := cfg.Logger.With("component", "gossip")
	mc.Logger = log.New(&logWriter{log: lg}, "", 0)
	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	p := &Pool{log: lg, seen: map[string]Peer{}, done: make(chan struct{}), changeCh: make(chan struct{}, 1)}
	d := &delegate{meta: meta, p: p}
	mc.Delegate, mc.Events = d, d
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start on %s: %w", cfg.Bind, err)
	}
	p.ml = ml
	jctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	go p.joinLoop(jctx, cfg.Join)
	return p, nil
}

func (p *Pool) joinLoop(ctx context.Context, addrs []string) {
	defer close(p.done)
	if len(addrs) == 0 {
		p.mu.Lock()
		p.joined = true
		p.mu.Unlock()
		return
	}
	backoff := 200 * time.Millisecond
	for {
		n, err := p.ml.Join(addrs)
		if err == nil || n > 0 {
			p.mu.Lock()
			p.joined, p.joinErr = true, nil
			p.mu.Unlock()
			p.log.Info("joined gossip pool", "contacted", n)
			return
		}
		p.mu.Lock()
		first := p.joinErr == nil
		p.joinErr = err
		p.mu.Unlock()
		if first {
			p.log.Warn("cannot join gossip pool yet; retrying", "join", addrs, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// Joined reports whether the pool was joined, and the last join error.
func (p *Pool) Joined() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.joined, p.joinErr
}

// Members lists every node this one has heard of (itself included), with
// its current state, sorted by name. Dead and departed nodes stay listed.
func (p *Pool) Members() []Peer {
	p.mu.Lock()
	out := make(map[string]Peer, len(p.seen))
	for k, v := range p.seen {
		out[k] = v
	}
	closed := p.closed
	p.mu.Unlock()
	if !closed {
		for _, n := range p.ml.Members() {
			out[n.Name] = peerOf(n)
		}
	}
	list := make([]Peer, 0, len(out))
	for _, v := range out {
		list = append(list, v)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}

// State returns the state of the named node ("unknown" if never seen).
func (p *Pool) State(name string) string {
	for _, m := range p.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return "unknown"
}

// Changes is signalled (coalesced) when a member joins, leaves or updates.
func (p *Pool) Changes() <-chan struct{} { return p.changeCh }

// Close leaves the pool gracefully and stops gossiping. It is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
	err := p.ml.Leave(time.Second)
	if serr := p.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(b []byte) (int, error) {
	line := string(bytes.TrimSpace(b))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelWarn // peers going away are expected; the pool handles them
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelInfo
	}
	if i := strings.Index(line, "memberlist: "); i >= 0 {
		line = line[i+len("memberlist: "):]
	}
	w.log.Log(context.Background(), level, line)
	return len(b), nil
}
