package coordtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/pgdr/pgdr/coordinator/config"
	"github.com/pgdr/pgdr/pkg/gossip"
	"github.com/pgdr/pgdr/pkg/testutil"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

var coordBin, ctlBin testutil.Builder

// Binary builds pgdr-coordinator once per test process.
func Binary(t testing.TB) string {
	return coordBin.Build(t, "./coordinator/cmd/pgdr-coordinator", "pgdr-coordinator")
}

// CtlBinary builds pgdrctl once per test process.
func CtlBinary(t testing.TB) string {
	return ctlBin.Build(t, "./coordinator/cmd/pgdrctl", "pgdrctl")
}

// Options shape a test cluster.
type Options struct {
	N int // coordinators (default 3)
	// Agents: node names of cluster "main" to issue agent certificates and
	// agent tokens for (see Cluster.AgentTokens).
	Agents []string
	// Extra is YAML appended to every coordinator's configuration.
	Extra string
	// SnapshotThreshold, TrailingLogs: raft settings (0 = defaults).
	SnapshotThreshold, TrailingLogs int
}

// Node is one coordinator process.
type Node struct {
	Name, Dir, Config                   string
	RaftAddr, APIAddr, HTTPAddr, Gossip string
	LogPath                             string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited and been reaped
	exit error         // cmd.Wait's result, set before done is closed
}

// Cluster is a set of coordinator processes sharing a CA and gossip key.
type Cluster struct {
	t       testing.TB
	Dir     string
	CertDir string
	KeyFile string
	Nodes   []*Node
	Tokens  map[string]string // role → secret (read and admin)
	// AgentTokens: node → the secret of an agent token bound to that node
	// of cluster "main" (one per Options.Agents).
	AgentTokens map[string]string
	bin         string
	mu          sync.Mutex
	conns       []*grpc.ClientConn
}

// Start creates and starts a cluster and waits for a leader.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.N == 0 {
		o.N = 3
	}
	c := &Cluster{t: t, Dir: t.TempDir(), bin: Binary(t), Tokens: map[string]string{}, AgentTokens: map[string]string{}}
	c.CertDir = filepath.Join(c.Dir, "tls")
	var names []string
	for i := 1; i <= o.N; i++ {
		names = append(names, fmt.Sprintf("c%d", i))
	}
	if err := tlsutil.DevInit(c.CertDir, append(names, "c-extra", "c-bad"), o.Agents, "main", false); err != nil {
		t.Fatal(err)
	}
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.KeyFile = filepath.Join(c.Dir, "gossip.key")
	must(t, os.WriteFile(c.KeyFile, []byte(key+"\n"), 0o600))
	var tokens strings.Builder
	for _, role := range []string{tlsutil.RoleRead, tlsutil.RoleAdmin} {
		secret := randHex(t)
		c.Tokens[role] = secret
		fmt.Fprintf(&tokens, "- {name: %s-token, role: %s, sha256: %s}\n", role, role, config.HashToken(secret))
	}
	for _, n := range o.Agents {
		secret := randHex(t)
		c.AgentTokens[n] = secret
		fmt.Fprintf(&tokens, "- {name: %s-token, role: agent, cluster: main, node: %s, sha256: %s}\n", n, n, config.HashToken(secret))
	}
	must(t, os.WriteFile(filepath.Join(c.Dir, "tokens.yaml"), []byte(tokens.String()), 0o600))
	for _, n := range names {
		c.Nodes = append(c.Nodes, c.newNode(n))
	}
	var boot strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&boot, "  - {name: %s, raft_address: %q, api_address: %q, region: %s}\n", n.Name, n.RaftAddr, n.APIAddr, region(n.Name))
	}
	for _, n := range c.Nodes {
		c.writeConfig(n, boot.String(), o, c.Nodes[0].Gossip, c.KeyFile)
		c.StartNode(n, "--bootstrap")
	}
	t.Cleanup(c.stopAll)
	c.WaitLeader(60 * time.Second)
	return c
}

func region(name string) string {
	if name == "c2" {
		return "eu-west-1"
	}
	return "us-east-1"
}

func (c *Cluster) newNode(name string) *Node {
	dir := filepath.Join(c.Dir, name)
	must(c.t, os.MkdirAll(dir, 0o700))
	p := func() string { return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(c.t)) }
	return &Node{Name: name, Dir: dir, Config: filepath.Join(dir, "coordinator.yaml"), LogPath: filepath.Join(dir, "coordinator.log"),
		RaftAddr: p(), APIAddr: p(), HTTPAddr: p(), Gossip: p()}
}

func (c *Cluster) writeConfig(n *Node, bootstrap string, o Options, join, keyFile string) {
	var raftExtra string
	if o.SnapshotThreshold > 0 {
		raftExtra += fmt.Sprintf("  snapshot_threshold: %d\n  snapshot_interval: 500ms\n", o.SnapshotThreshold)
	}
	if o.TrailingLogs > 0 {
		raftExtra += fmt.Sprintf("  trailing_logs: %d\n", o.TrailingLogs)
	}
	joinLine := ""
	if join != "" && join != n.Gossip {
		joinLine = fmt.Sprintf("  join: [%q]\n", join)
	}
	bootLines := ""
	if bootstrap != "" {
		bootLines = "bootstrap:\n" + bootstrap
	}
	cfg := fmt.Sprintf(`name: %s
region: %s
data_dir: %s
log_level: info
raft:
  bind: %q
%sapi:
  listen: %q
http:
  listen: %q
gossip:
  bind: %q
  key_file: %s
  profile: local
%stls:
  ca_file: %s
  cert_file: %s
  key_file: %s
auth:
  tokens_file: %s
health:
  stale_after: 3s
%s%s`, n.Name, region(n.Name), filepath.Join(n.Dir, "data"), n.RaftAddr, raftExtra, n.APIAddr, n.HTTPAddr, n.Gossip, keyFile, joinLine,
		filepath.Join(c.CertDir, "ca.crt"), filepath.Join(c.CertDir, n.Name+".crt"), filepath.Join(c.CertDir, n.Name+".key"),
		filepath.Join(c.Dir, "tokens.yaml"), bootLines, o.Extra)
	must(c.t, os.WriteFile(n.Config, []byte(cfg), 0o600))
}

// AddNode writes the configuration of a coordinator that is not in the
// bootstrap list (to be added with AddCoordinator), with the given gossip
// key file, and starts it.
func (c *Cluster) AddNode(name, keyFile string) *Node {
	n := c.newNode(name)
	c.writeConfig(n, "", Options{}, c.Nodes[0].Gossip, keyFile)
	c.StartNode(n)
	return n
}

// StartNode starts (or restarts) a coordinator process with extra
// arguments to `run`. Start passes --bootstrap on the cluster's first
// start; a restart passes nothing.
func (c *Cluster) StartNode(n *Node, extra ...string) {
	c.t.Helper()
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, append([]string{"run", "--config", n.Config, "--pid-file", filepath.Join(n.Dir, "coordinator.pid")}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatal(err)
	}
	logf.Close()
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		err := cmd.Wait() // tests kill these; WaitExit reports it for one that exits on its own
		n.mu.Lock()
		n.exit = err
		n.mu.Unlock()
		close(done)
	}()
}

// WaitExit waits up to d for the node's process (as last started) to exit
// by itself and returns its exit error (nil for status 0); ok is false if
// it still runs after d.
func (n *Node) WaitExit(d time.Duration) (exit error, ok bool) {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return nil, false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	default: // an exit that already happened wins over a zero d
		select {
		case <-done:
		case <-t.C:
			return nil, false
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exit, true
}

// Kill sends SIGKILL to a coordinator and waits for it to die.
func (c *Cluster) Kill(n *Node) { c.signal(n, syscall.SIGKILL) }

// Stop sends SIGTERM and waits for a clean exit.
func (c *Cluster) Stop(n *Node) { c.signal(n, syscall.SIGTERM) }

func (c *Cluster) signal(n *Node, sig syscall.Signal) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Running reports whether the node's process is started (not stopped by the test).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	for _, cc := range c.conns {
		cc.Close()
	}
	c.conns = nil
	c.mu.Unlock()
	for _, n := range c.Nodes {
		c.Stop(n)
	}
	if c.t.Failed() {
		for _, n := range c.Nodes {
			if b, err := os.ReadFile(n.LogPath); err == nil {
				c.t.Logf("--- %s log ---\n%s", n.Name, testutil.Trim(b))
			}
		}
	}
}

// Files are the certificate files of a name issued by the test CA.
func (c *Cluster) Files(name string) tlsutil.Files {
	return tlsutil.Files{CA: filepath.Join(c.CertDir, "ca.crt"), Cert: filepath.Join(c.CertDir, name+".crt"), Key: filepath.Join(c.CertDir, name+".key")}
}

// Conn dials a coordinator's API with the named certificate ("" = none).
func (c *Cluster) Conn(n *Node, certName string) *grpc.ClientConn {
	c.t.Helper()
	f := tlsutil.Files{CA: filepath.Join(c.CertDir, "ca.crt")}
	if certName != "" {
		f = c.Files(certName)
	}
	tc, err := tlsutil.ClientConfig(f)
	if err != nil {
		c.t.Fatal(err)
	}
	cc, err := grpc.NewClient(n.APIAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.conns = append(c.conns, cc)
	c.mu.Unlock()
	return cc
}

// Admin is an AdminService client with the admin certificate.
func (c *Cluster) Admin(n *Node) pgdrv1.AdminServiceClient {
	return pgdrv1.NewAdminServiceClient(c.Conn(n, "admin"))
}

// WithToken adds a bearer token to ctx.
func WithToken(ctx context.Context, secret string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}

// Health is a coordinator's /health body.
type Health struct {
	Name              string `json:"name"`
	RaftState         string `json:"raft_state"`
	Leader            string `json:"leader"`
	AppliedIndex      uint64 `json:"applied_index"`
	LastSnapshotIndex string `json:"last_snapshot_index"`
	GossipJoined      *bool  `json:"gossip_joined"`
	GossipError       string `json:"gossip_error"`
	GossipAlive       int    `json:"gossip_alive"`
}

// Health reads a node's /health (an error when it does not answer).
func (c *Cluster) Health(n *Node) (Health, error) {
	var h Health
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + n.HTTPAddr + "/health")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h, err
}

// WaitLeader waits until every running node agrees on one leader, and
// returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) *Node {
	c.t.Helper()
	var leader *Node
	testutil.WaitFor(c.t, timeout, "one leader agreed by every running coordinator", func() (bool, error) {
		name := ""
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			h, err := c.Health(n)
			if err != nil {
				return false, fmt.Errorf("%s: %w", n.Name, err)
			}
			if h.Leader == "" || (name != "" && h.Leader != name) {
				return false, fmt.Errorf("%s sees leader %q", n.Name, h.Leader)
			}
			name = h.Leader
		}
		for _, n := range c.Nodes {
			if n.Name == name && n.Running() {
				leader = n
				return true, nil
			}
		}
		return false, fmt.Errorf("leader %q is not a running node", name)
	})
	return leader
}

// Node returns the named node.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	c.t.Fatalf("no coordinator %s", name)
	return nil
}

// Env is the environment pgdrctl needs to reach this cluster as role.
func (c *Cluster) Env(certName string) []string {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.APIAddr)
	}
	f := c.Files(certName)
	return []string{"PGDR_ADDR=" + strings.Join(addrs, ","), "PGDR_CA=" + f.CA, "PGDR_CERT=" + f.Cert, "PGDR_KEY=" + f.Key}
}

func randHex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
