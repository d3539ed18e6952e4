package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/strictyaml"
	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/pkg/tlsutil"
)

// Config is pgdr-coordinator's configuration.
type Config struct {
	Name      string        `yaml:"name"`
	Region    string        `yaml:"region"`
	DataDir   string        `yaml:"data_dir"`
	Raft      Raft          `yaml:"raft"`
	API       API           `yaml:"api"`
	HTTP      HTTP          `yaml:"http"`
	UI        UI            `yaml:"ui"`
	Gossip    Gossip        `yaml:"gossip"`
	TLS       tlsutil.Files `yaml:"tls"`
	Auth      Auth          `yaml:"auth"`
	Health    Health        `yaml:"health"`
	Failover  Failover      `yaml:"failover"`
	Bootstrap []Peer        `yaml:"bootstrap"`
	LogLevel  string        `yaml:"log_level"`

	// Notifications: webhooks the leader posts history events to.
	Notifications Notifications `yaml:"notifications"`
	// Incidents: escalation and notification of the incidents.
	Incidents Incidents `yaml:"incidents"`
	// Slots: when the leader drops the replication slots of WAL
	// receivers that stay down (coordinator/slots).
	Slots Slots `yaml:"slots"`

	Path string `yaml:"-"`
}

// Slots tunes the leader's dropping of pgdr-managed replication slots
// (named pgdr_<node>, made by agents' WAL receivers).
type Slots struct {
	// Disabled: the leader never drops a slot.
	Disabled bool `yaml:"disabled"`
	// DropInactiveAfter: an unused managed slot on the primary is dropped
	// once unused this long (default 30m, at least 1m).
	DropInactiveAfter Duration `yaml:"drop_inactive_after"`
	// MaxRetainedBytes: an unused managed slot keeping more WAL is dropped
	// after a minute (0, the default: no byte limit).
	MaxRetainedBytes uint64 `yaml:"max_retained_bytes"`
}

// DefaultSlotDropAfter is slots.drop_inactive_after when not set.
const DefaultSlotDropAfter = 30 * time.Minute

// Raft tunes the consensus layer.
type Raft struct {
	Bind string `yaml:"bind"`
	// Advertise is the address peers dial (default: Bind).
	Advertise         string   `yaml:"advertise"`
	SnapshotThreshold uint64   `yaml:"snapshot_threshold"`
	SnapshotInterval  Duration `yaml:"snapshot_interval"`
	TrailingLogs      uint64   `yaml:"trailing_logs"`
	HeartbeatTimeout  Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout   Duration `yaml:"election_timeout"`
	LeaderLease       Duration `yaml:"leader_lease_timeout"`
}

// API is the gRPC listener (admin, agent and coordinator services).
type API struct {
	Listen string `yaml:"listen"`
	// Advertise is the address others dial (default: Listen).
	Advertise string `yaml:"advertise"`
}

// HTTP serves /metrics and /health ("" disables).
type HTTP struct {
	Listen string `yaml:"listen"`
}

// Gossip joins the memberlist pool ("" bind disables it).
type Gossip struct {
	Bind    string   `yaml:"bind"`
	Join    []string `yaml:"join"`
	KeyFile string   `yaml:"key_file"`
	// Profile: lan (default), wan, or local for loopback labs.
	Profile string `yaml:"profile"`
}

// Auth names the bearer tokens file. Client certificates need no setting:
// their role is in the certificate (see pkg/tlsutil).
type Auth struct {
	TokensFile string `yaml:"tokens_file"`
}

// Health tunes how the leader judges agent reports.
type Health struct {
	// StaleAfter: a member whose last report is older is "unknown".
	StaleAfter Duration `yaml:"stale_after"`
}

// Failover tunes primary leases and automatic failover.
type Failover struct {
	// LeaseTTL: how long a granted primary lease lasts.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// SafetyMargin: the agent fences this long before its lease ends.
	SafetyMargin Duration `yaml:"safety_margin"`
	// MinInterval: no second automatic failover of a cluster within it.
	MinInterval Duration `yaml:"min_interval"`
	// CommandTimeout bounds how long the leader waits for an agent to carry
	// out a promote order.
	CommandTimeout Duration `yaml:"command_timeout"`
	// PauseBeforePromote is for fault-injection tests only: the leader
	// waits this long between recording a new primary in Raft and ordering
	// its promotion (in a failover or a switchover), so that a test can
	// kill it in the middle of one. 0 (the default) in production.
	PauseBeforePromote Duration `yaml:"pause_before_promote"`
}

// Peer is one coordinator of the initial cluster.
type Peer struct {
	Name        string `yaml:"name"`
	RaftAddress string `yaml:"raft_address"`
	APIAddress  string `yaml:"api_address"`
	Region      string `yaml:"region"`
}

// Duration is a time.Duration written as "1s", "250ms".
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (like 500ms or 2s)", n.Line, s)
	}
	d.Duration = v
	return nil
}

// FieldError names the field a validation error is about.
type FieldError struct{ Field, Msg string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Load reads, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Parse decodes YAML (unknown keys are errors), applies defaults and validates.
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := strictyaml.Decode(data, &c); err != nil {
		return nil, err
	}
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) defaults() {
	def := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	if c.Raft.Advertise == "" {
		c.Raft.Advertise = c.Raft.Bind
	}
	if c.API.Advertise == "" {
		c.API.Advertise = c.API.Listen
	}
	if c.Raft.SnapshotThreshold == 0 {
		c.Raft.SnapshotThreshold = 8192
	}
	if c.Raft.TrailingLogs == 0 {
		c.Raft.TrailingLogs = 10240
	}
	def(&c.Raft.SnapshotInterval, 2*time.Minute)
	// LAN defaults: a lost leader is replaced in under two seconds, and a
	// leader busy with thousands of agent streams does not step down for
	// one late heartbeat (a 250 ms leader lease did, under 5,000 agents;
	// measured with scripts/bench/coordinator.sh).
	def(&c.Raft.HeartbeatTimeout, 700*time.Millisecond)
	def(&c.Raft.ElectionTimeout, 700*time.Millisecond)
	def(&c.Raft.LeaderLease, 500*time.Millisecond)
	def(&c.Health.StaleAfter, 3*time.Second)
	def(&c.Failover.LeaseTTL, 5*time.Second)
	def(&c.Failover.SafetyMargin, time.Second)
	def(&c.Failover.MinInterval, time.Minute)
	def(&c.Failover.CommandTimeout, 60*time.Second)
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	c.Notifications.defaults()
	// Left out, quorum_lost_after is above an ordinary election however
	// slow the raft timeouts (see Validate).
	def(&c.Incidents.QuorumLostAfter, max(DefaultQuorumLostAfter, 4*max(c.Raft.ElectionTimeout.Duration, c.Raft.HeartbeatTimeout.Duration)))
	c.Incidents.defaults()
	def(&c.Slots.DropInactiveAfter, DefaultSlotDropAfter)
	c.UI.defaults()
	for i := range c.Bootstrap {
		if c.Bootstrap[i].APIAddress == "" && c.Bootstrap[i].Name == c.Name {
			c.Bootstrap[i].APIAddress = c.API.Advertise
		}
	}
}

func hostPort(field, v string, required bool) error {
	if v == "" {
		if required {
			return &FieldError{field, "required (host:port)"}
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return &FieldError{field, fmt.Sprintf("%q is not host:port", v)}
	}
	return nil
}

// Validate checks every field and names the first one that is wrong.
func (c *Config) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return &FieldError{"name", fmt.Sprintf("%q is not a valid name (letters, digits, . _ -)", c.Name)}
	}
	if c.Region == "" {
		return &FieldError{"region", "required"}
	}
	if c.DataDir == "" {
		return &FieldError{"data_dir", "required"}
	}
	for _, hp := range []struct {
		f, v string
		req  bool
	}{
		{"raft.bind", c.Raft.Bind, true}, {"raft.advertise", c.Raft.Advertise, true},
		{"api.listen", c.API.Listen, true}, {"api.advertise", c.API.Advertise, true},
		{"http.listen", c.HTTP.Listen, false}, {"gossip.bind", c.Gossip.Bind, false},
	} {
		if err := hostPort(hp.f, hp.v, hp.req); err != nil {
			return err
		}
	}
	for i, j := range c.Gossip.Join {
		if err := hostPort(fmt.Sprintf("gossip.join[%d]", i), j, true); err != nil {
			return err
		}
	}
	if d := c.Slots.DropInactiveAfter.Duration; !c.Slots.Disabled && d < time.Minute {
		return &FieldError{"slots.drop_inactive_after", fmt.Sprintf("%s is under 1m: a receiver between two connections would lose its slot", d)}
	}
	if c.Gossip.Bind != "" && c.Gossip.KeyFile == "" {
		return &FieldError{"gossip.key_file", "required when gossip.bind is set (the pool is always encrypted)"}
	}
	switch c.Gossip.Profile {
	case "", "lan", "wan", "local":
	default:
		return &FieldError{"gossip.profile", fmt.Sprintf("%q: want lan, wan or local", c.Gossip.Profile)}
	}
	if c.TLS.CA == "" {
		return &FieldError{"tls.ca_file", "required (the API and Raft traffic always use TLS)"}
	}
	if c.TLS.Cert == "" {
		return &FieldError{"tls.cert_file", "required"}
	}
	if c.TLS.Key == "" {
		return &FieldError{"tls.key_file", "required"}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return &FieldError{"log_level", fmt.Sprintf("%q: want debug, info, warn or error", c.LogLevel)}
	}
	if c.Raft.ElectionTimeout.Duration < 50*time.Millisecond || c.Raft.HeartbeatTimeout.Duration < 50*time.Millisecond {
		return &FieldError{"raft", "heartbeat_timeout and election_timeout must be at least 50ms"}
	}
	if c.Raft.LeaderLease.Duration > c.Raft.HeartbeatTimeout.Duration {
		return &FieldError{"raft.leader_lease_timeout", "must not exceed raft.heartbeat_timeout"}
	}
	if c.Failover.PauseBeforePromote.Duration < 0 || c.Failover.PauseBeforePromote.Duration > time.Minute {
		return &FieldError{"failover.pause_before_promote", "must be between 0 and 1m (fault-injection tests only)"}
	}
	if c.Failover.SafetyMargin.Duration >= c.Failover.LeaseTTL.Duration {
		return &FieldError{"failover.safety_margin", "must be shorter than failover.lease_ttl"}
	}
	if err := c.Notifications.validate(); err != nil {
		return err
	}
	if err := c.Incidents.validate(); err != nil {
		return err
	}
	// A gap shorter than failure detection plus an election or two is an
	// ordinary leader change, not a lost quorum.
	if floor := 4 * max(c.Raft.ElectionTimeout.Duration, c.Raft.HeartbeatTimeout.Duration); c.Incidents.QuorumLostAfter.Duration < floor {
		return &FieldError{"incidents.quorum_lost_after", fmt.Sprintf("%s is shorter than an ordinary leader election may take (%s: 4 × raft election/heartbeat timeout)",
			c.Incidents.QuorumLostAfter.Duration, floor)}
	}
	if err := c.UI.validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	self := len(c.Bootstrap) == 0
	for i, p := range c.Bootstrap {
		f := fmt.Sprintf("bootstrap[%d]", i)
		if !nameRE.MatchString(p.Name) {
			return &FieldError{f + ".name", fmt.Sprintf("%q is not a valid name", p.Name)}
		}
		if seen[p.Name] {
			return &FieldError{f + ".name", fmt.Sprintf("%q is listed twice", p.Name)}
		}
		seen[p.Name] = true
		if err := hostPort(f+".raft_address", p.RaftAddress, true); err != nil {
			return err
		}
		if err := hostPort(f+".api_address", p.APIAddress, true); err != nil {
			return err
		}
		if p.Name == c.Name {
			self = true
			if p.RaftAddress != c.Raft.Advertise {
				return &FieldError{f + ".raft_address", fmt.Sprintf("%s differs from this coordinator's raft.advertise %s", p.RaftAddress, c.Raft.Advertise)}
			}
		}
	}
	if !self {
		return &FieldError{"bootstrap", fmt.Sprintf("does not list this coordinator (%s); list every initial voter, or leave it empty to join through `pgdrctl coordinator add`", c.Name)}
	}
	return nil
}

// Token is one bearer token, stored as the hex SHA-256 of the secret. An
// agent token is bound to one node of one cluster (Cluster, Node, both
// required for role agent and refused for the other roles): it acts for
// that member only.
type Token struct {
	Name    string `yaml:"name"`
	Role    string `yaml:"role"`
	Cluster string `yaml:"cluster"`
	Node    string `yaml:"node"`
	SHA256  string `yaml:"sha256"`
}

// Tokens is a loaded tokens file.
type Tokens struct{ list []Token }

// LoadTokens reads a tokens file: a YAML list of {name, role, sha256},
// plus {cluster, node} for role agent.
func LoadTokens(path string) (*Tokens, error) {
	if path == "" {
		return &Tokens{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	var list []Token
	if err := strictyaml.Decode(data, &list); err != nil && !errors.Is(err, strictyaml.ErrEmpty) {
		return nil, fmt.Errorf("tokens %s: %w", path, err)
	}
	for i, t := range list {
		f := fmt.Sprintf("tokens %s: [%d]", path, i)
		if t.Name == "" {
			return nil, fmt.Errorf("%s.name: required", f)
		}
		if !tlsutil.ValidRole(t.Role) {
			return nil, fmt.Errorf("%s.role: %q is not read, admin, agent or coordinator", f, t.Role)
		}
		if t.Role == tlsutil.RoleAgent {
			for _, v := range []struct{ field, val string }{{"cluster", t.Cluster}, {"node", t.Node}} {
				if v.val == "" {
					return nil, fmt.Errorf("%s.%s: required for role agent (an agent token acts for one node of one cluster)", f, v.field)
				}
				if !nameRE.MatchString(v.val) {
					return nil, fmt.Errorf("%s.%s: %q is not a valid name (letters, digits, '.', '_', '-'; at most 63)", f, v.field, v.val)
				}
			}
		} else if t.Cluster != "" || t.Node != "" {
			return nil, fmt.Errorf("%s: cluster and node bind agent tokens only; role %s acts for no node", f, t.Role)
		}
		if b, err := hex.DecodeString(t.SHA256); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s.sha256: want 64 hex digits (sha256sum of the token)", f)
		}
		list[i].SHA256 = strings.ToLower(t.SHA256)
	}
	return &Tokens{list: list}, nil
}

// HashToken is the form a token is stored in.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Lookup returns the token matching secret, comparing in constant time.
func (t *Tokens) Lookup(secret string) (Token, bool) {
	h := HashToken(secret)
	var found Token
	ok := false
	for _, tok := range t.list {
		if subtle.ConstantTimeCompare([]byte(h), []byte(tok.SHA256)) == 1 {
			found, ok = tok, true
		}
	}
	return found, ok
}
