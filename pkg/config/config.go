package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgdr/pgdr/pkg/conninfo"
	"github.com/pgdr/pgdr/pkg/strictyaml"
)

// Config is the agent's configuration file.
type Config struct {
	Cluster     string      `yaml:"cluster"`
	Node        Node        `yaml:"node"`
	Postgres    Postgres    `yaml:"postgres"`
	Repos       []Repo      `yaml:"repos"`
	Compression Compression `yaml:"compression"`
	Encryption  Encryption  `yaml:"encryption"`
	Signing     Signing     `yaml:"signing"`
	WAL         WAL         `yaml:"wal"`
	Agent       Agent       `yaml:"agent"`
	Health      Health      `yaml:"health"`
	Heartbeat   Heartbeat   `yaml:"heartbeat"`
	Coordinator Coordinator `yaml:"coordinator"`
	Gossip      Gossip      `yaml:"gossip"`
	Failover    Failover    `yaml:"failover"`
	Hooks       Hooks       `yaml:"hooks"`
	// Commands: what runbook steps may run on this node, by name.
	Commands map[string]Command `yaml:"commands"`
	Metrics  Metrics            `yaml:"metrics"`

	// Path is the file the configuration was loaded from (not a YAML key).
	Path string `yaml:"-"`
}

// Node identifies this PostgreSQL server within the cluster.
type Node struct {
	Name   string `yaml:"name"`
	Region string `yaml:"region"`
	// Tags such as "no-failover" travel to the coordinator with the member.
	Tags []string `yaml:"tags"`
	// Priority: higher is preferred as a failover candidate; 0 is the default.
	Priority int `yaml:"priority"`
	// AdvertiseDSN is how other members and operators reach this server
	// (default: postgres.dsn). A password in it is never sent anywhere.
	AdvertiseDSN string `yaml:"advertise_dsn"`
}

// Postgres locates the local PostgreSQL server.
type Postgres struct {
	PGData string `yaml:"pgdata"`
	BinDir string `yaml:"bindir"`
	DSN    string `yaml:"dsn"`
}

// Repo is one repository. Every write (wal-push, backups) goes to all
// repositories of mode sync and succeeds only once in all of them; a
// repository of mode async is filled afterwards by the agent daemon from
// a durable queue (agent/repocopy), so its outage never stops archiving.
type Repo struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// Mode is sync (the default) or async.
	Mode string `yaml:"mode"`
	// CopyConcurrency is how many objects the daemon copies into an async
	// repository at once (default 4).
	CopyConcurrency int `yaml:"copy_concurrency"`
	S3              *S3 `yaml:"s3"`
}

// Repository modes.
const (
	ModeSync  = "sync"
	ModeAsync = "async"
)

// Async says whether the repository is filled by the daemon's copier
// rather than by every write.
func (r Repo) Async() bool { return r.Mode == ModeAsync }

// S3 holds the settings of an s3:// repository. Credentials are read from
// the files named here, or else from the standard AWS environment variables
// and shared credential files; they are never written in this file.
type S3 struct {
	Endpoint            string `yaml:"endpoint"`
	Region              string `yaml:"region"`
	PathStyle           bool   `yaml:"path_style"`
	AccessKeyIDFile     string `yaml:"access_key_id_file"`
	SecretAccessKeyFile string `yaml:"secret_access_key_file"`
	PartSizeMB          int    `yaml:"part_size_mb"`
	MaxAttempts         int    `yaml:"max_attempts"`
}

// Compression selects the compression of every stored object.
type Compression struct {
	Method string `yaml:"method"` // zstd (default) or none
	Level  int    `yaml:"level"`  // zstd level 1..22, default 3
}

// Encryption selects age recipients (for writing) and the identity (for
// reading). Disabled must be set explicitly to store plaintext.
type Encryption struct {
	Disabled       bool     `yaml:"disabled"`
	Recipients     []string `yaml:"recipients"`
	RecipientsFile string   `yaml:"recipients_file"`
	IdentityFile   string   `yaml:"identity_file"`
}

// Signing authenticates what writers store: backup manifests and WAL
// objects are signed with the Ed25519 key in KeyFile (writers: the agents
// that push WAL and take backups) and checked, when read, against
// PublicKeys, PublicKeysFile and KeyFile's own public key. Signing is
// configured when any of them is set; see docs/security.md.
type Signing struct {
	KeyFile        string   `yaml:"key_file"`
	PublicKeys     []string `yaml:"public_keys"`
	PublicKeysFile string   `yaml:"public_keys_file"`
	// Require refuses unsigned objects; it defaults to true when signing
	// is configured. false reads a repository written before signing was
	// set up (unsigned objects are then read unauthenticated).
	Require *bool `yaml:"require"`
}

// Configured says whether objects are signed and checked.
func (s Signing) Configured() bool {
	return s.KeyFile != "" || len(s.PublicKeys) > 0 || s.PublicKeysFile != ""
}

// Required says whether unsigned objects are refused.
func (s Signing) Required() bool {
	return s.Configured() && (s.Require == nil || *s.Require)
}

// WAL tunes archiving and fetching.
type WAL struct {
	PushConcurrency int `yaml:"push_concurrency"` // segments uploaded in parallel per push
	Prefetch        int `yaml:"prefetch"`         // segments fetched ahead during recovery
	// Receive is the agent daemon's WAL receiver (agent/walrecv).
	Receive WALReceive `yaml:"receive"`
}

// WALReceive configures the WAL receiver: it streams the cluster's WAL
// from the primary through a physical replication slot into a local spool
// and uploads it to every repository (the segment being written as a
// partial object, complete segments as wal-push stores them).
type WALReceive struct {
	Enabled bool `yaml:"enabled"`
	// Slot is the physical replication slot on the primary (default
	// pgdr_<node name>, lower-cased, other characters than a-z, 0-9 and _
	// replaced by _).
	Slot string `yaml:"slot"`
	// SpoolDir holds the received segments (default
	// <parent of pgdata>/pgdr/walrecv-<cluster>-<node>).
	SpoolDir string `yaml:"spool_dir"`
	// UploadInterval: the segment being written is uploaded at least this
	// often while it grows (default 1s, 100ms..1m).
	UploadInterval Duration `yaml:"upload_interval"`
	// Synchronous: the receiver may be named in synchronous_standby_names
	// (as <node>_walrecv); it reports WAL flushed only once it is durable
	// in the spool.
	Synchronous bool `yaml:"synchronous"`
}

// ReceiveAppNameSuffix follows the node name in the WAL receiver's
// application_name.
const ReceiveAppNameSuffix = "_walrecv"

// ReceiveAppName is the application_name of node's WAL receiver: the node
// name (cut so that the whole fits PostgreSQL's 63 bytes) and "_walrecv".
// It differs from the node's own PostgreSQL walreceiver's (the node name),
// so synchronous_standby_names can name the receiver.
func ReceiveAppName(node string) string {
	if max := 63 - len(ReceiveAppNameSuffix); len(node) > max {
		node = node[:max]
	}
	return node + ReceiveAppNameSuffix
}

// DefaultReceiveSlot is wal.receive.slot's default for node: ReceiverSlot
// (slot.go), the name the coordinators know a member's slot by.
func DefaultReceiveSlot(node string) string { return ReceiverSlot(node) }

// DefaultReceiveSpool is wal.receive.spool_dir's default: beside the
// agent's socket, in the directory of the agent's user next to the data
// directory.
func DefaultReceiveSpool(pgdata, cluster, node string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(pgdata)), "pgdr", "walrecv-"+cluster+"-"+node)
}

var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// DefaultUploadInterval is wal.receive.upload_interval's default.
const DefaultUploadInterval = time.Second

// DefaultSocket is agent.socket when the configuration does not set it:
// <parent of pgdata>/pgdr/<cluster>-<node>.sock. The data directory's
// parent belongs to PostgreSQL's user (restore relies on it too), so the
// agent's user can make the pgdr directory there and no one else can.
func DefaultSocket(pgdata, cluster, node string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(pgdata)), "pgdr", cluster+"-"+node+".sock")
}

// Agent configures the agent process itself.
type Agent struct {
	// Socket is the daemon's local socket; one-shot commands hand work to it.
	Socket string `yaml:"socket"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// StateDir holds the agent's durable local state: the queues of
	// objects still to copy into async repositories (default: the
	// socket's directory). wal-push, run by PostgreSQL's user, writes in
	// it too.
	StateDir string `yaml:"state_dir"`
}

// Health configures the daemon's local checks and its HTTP endpoints.
type Health struct {
	// Interval between two rounds of checks (a Go duration: 1s, 500ms).
	Interval Duration `yaml:"interval"`
	// Listen is host:port of the HTTP server (/health, /ready, /primary,
	// /replica, /metrics); "" disables it.
	Listen string `yaml:"listen"`
	// Advertise is host:port where the other agents and the coordinators
	// reach this HTTP server (the registered api_url, gossip's API, the
	// failsafe pings); "" = listen.
	Advertise string `yaml:"advertise"`
	// MaxReplicaLag in bytes (an integer, or a size such as 16MB): above
	// it /replica answers 503.
	MaxReplicaLag ByteSize `yaml:"max_replica_lag"`
}

// Metrics configures what the daemon's /metrics reads besides its checks.
type Metrics struct {
	// RepoInterval is how often the daemon reads what its repositories
	// hold (backups per tier, the newest archived WAL) for the pgdr_repo_*
	// metrics (a Go duration, 1s..24h; default 1m).
	RepoInterval Duration `yaml:"repo_interval"`
}

// Heartbeat configures the write-availability heartbeat: the primary's
// agent commits one row (pgdr.heartbeat) every interval (agent/heartbeat).
type Heartbeat struct {
	// Enabled (default true); false writes no heartbeat, and the cluster's
	// write availability is then not measured.
	Enabled *bool `yaml:"enabled"`
	// Interval between two heartbeats (default 1s, 100ms..1m).
	Interval Duration `yaml:"interval"`
}

// On reports whether heartbeats are written (enabled is unset or true).
func (h Heartbeat) On() bool { return h.Enabled == nil || *h.Enabled }

// Coordinator locates the coordinator cluster; with no addresses the agent
// runs standalone and reports to no one.
type Coordinator struct {
	// Addresses are host:port of the coordinators' gRPC API; any of them
	// names the leader.
	Addresses []string `yaml:"addresses"`
	CAFile    string   `yaml:"ca_file"`
	CertFile  string   `yaml:"cert_file"`
	KeyFile   string   `yaml:"key_file"`
	// TokenFile holds a bearer token (sent as "authorization: Bearer ...").
	TokenFile string `yaml:"token_file"`
	// LeaderAddresses maps a coordinator's name to where this agent dials
	// it once it is named leader, instead of the api_address it advertises
	// (NAT, port forwarding, test proxies).
	LeaderAddresses map[string]string `yaml:"leader_addresses"`
}

// Gossip joins the memberlist pool of agents and coordinators.
type Gossip struct {
	// Bind is host:port for gossip (UDP and TCP); "" disables gossip.
	Bind string `yaml:"bind"`
	// Join lists host:port of pool members to join.
	Join []string `yaml:"join"`
	// KeyFile holds the pool's shared key (base64; required with bind).
	KeyFile string `yaml:"key_file"`
}

// Failover tunes the primary lease (used only with coordinator.addresses).
type Failover struct {
	// Loop is how often the primary's agent renews its lease.
	Loop Duration `yaml:"loop"`
	// LeaseTTL is how long a granted lease lasts, counted from when the
	// renewal was sent. The coordinator's grant may shorten it.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// SafetyMargin: the agent fences its PostgreSQL at lease_ttl minus
	// this margin after the last granted renewal was sent.
	SafetyMargin Duration `yaml:"safety_margin"`
	// Failsafe (default true): a primary that cannot reach the coordinator
	// leader keeps serving past its lease while every other member's agent
	// acknowledges its failsafe pings (see agent/failsafe).
	Failsafe *bool `yaml:"failsafe"`
	// Watchdog (default true): the daemon runs a watchdog process that
	// fences PostgreSQL itself when the agent stalls past its lease
	// deadline (see agent/watchdog).
	Watchdog *bool `yaml:"watchdog"`
	// LeaseGatedCommits (default off): the primary's agent sits on the
	// synchronous commit path as a replication client of its own server
	// (agent/commitgate) and acknowledges commits only while the primary
	// lease is valid, so that no commit is acknowledged after the lease
	// expired, even across a freeze of the whole node. Needs
	// coordinator.addresses.
	LeaseGatedCommits Switch `yaml:"lease_gated_commits"`
}

// Defaults applied by Load for keys left out of the file.
const (
	DefaultCompressionLevel = 3
	DefaultPushConcurrency  = 4
	DefaultPrefetch         = 8
	DefaultHealthInterval   = time.Second
	DefaultRepoInterval     = time.Minute
	DefaultHeartbeat        = time.Second
	DefaultHealthListen     = "127.0.0.1:8543"
	DefaultMaxReplicaLag    = 16 << 20 // bytes
	DefaultFailoverLoop     = time.Second
	DefaultLeaseTTL         = 5 * time.Second
	DefaultSafetyMargin     = time.Second
	DefaultCopyConcurrency  = 4
)

// FieldError is a validation error about one field, named by its YAML path.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// MaxRepos bounds the repositories of a node: each is reported to the
// coordinator (archive RPO) and becomes a metric label there, and the
// coordinator refuses reports listing more.
const MaxRepos = 16

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Load reads, defaults and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

// Parse decodes YAML (unknown keys are errors), applies defaults and validates.
func Parse(data []byte) (*Config, error) {
	// Keys whose explicit zero value means something ("" disables the HTTP
	// server, 0 allows no lag) are defaulted before decoding.
	cfg := Config{Health: Health{Listen: DefaultHealthListen, MaxReplicaLag: ByteSize{Bytes: DefaultMaxReplicaLag}}}
	if err := strictyaml.Decode(data, &cfg); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) applyDefaults() {
	if c.Postgres.BinDir == "" {
		c.Postgres.BinDir = "/usr/lib/postgresql/15/bin"
	}
	if c.Compression.Method == "" {
		c.Compression.Method = "zstd"
	}
	if c.Compression.Level == 0 {
		c.Compression.Level = DefaultCompressionLevel
	}
	if c.WAL.PushConcurrency == 0 {
		c.WAL.PushConcurrency = DefaultPushConcurrency
	}
	if c.WAL.Prefetch == 0 {
		c.WAL.Prefetch = DefaultPrefetch
	}
	if c.Agent.LogLevel == "" {
		c.Agent.LogLevel = "info"
	}
	c.receiveDefaults()
	if c.Agent.Socket == "" && c.Cluster != "" && c.Node.Name != "" && filepath.IsAbs(c.Postgres.PGData) {
		// Beside the data directory, in a directory of the agent's user
		// (the daemon makes it, mode 0700): never a predictable name in
		// a directory every user can write to (docs/security.md).
		c.Agent.Socket = DefaultSocket(c.Postgres.PGData, c.Cluster, c.Node.Name)
	}
	if c.Health.Interval.Duration == 0 && c.Health.Interval.text == "" {
		c.Health.Interval.Duration = DefaultHealthInterval
	}
	if c.Metrics.RepoInterval.Duration == 0 && c.Metrics.RepoInterval.text == "" {
		c.Metrics.RepoInterval.Duration = DefaultRepoInterval
	}
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{{&c.Heartbeat.Interval, DefaultHeartbeat}, {&c.Failover.Loop, DefaultFailoverLoop}, {&c.Failover.LeaseTTL, DefaultLeaseTTL}, {&c.Failover.SafetyMargin, DefaultSafetyMargin}} {
		if d.v.Duration == 0 && d.v.text == "" {
			d.v.Duration = d.def
		}
	}
	if c.Node.AdvertiseDSN == "" {
		c.Node.AdvertiseDSN = c.Postgres.DSN
	}
	c.Hooks.applyDefaults()
	c.commandDefaults()
	for i := range c.Repos {
		if c.Repos[i].Name == "" {
			c.Repos[i].Name = fmt.Sprintf("repo%d", i+1)
		}
		if c.Repos[i].Mode == "" {
			c.Repos[i].Mode = ModeSync
		}
		if c.Repos[i].CopyConcurrency == 0 && c.Repos[i].Async() {
			c.Repos[i].CopyConcurrency = DefaultCopyConcurrency
		}
	}
	if c.Agent.StateDir == "" && c.Agent.Socket != "" {
		c.Agent.StateDir = filepath.Dir(c.Agent.Socket)
	}
}

// Validate checks every field and returns the first problem found, naming
// the field by its YAML path.
func (c *Config) Validate() error {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if c.Cluster == "" {
		return fe("cluster", "is required (the name of the PostgreSQL cluster this node belongs to)")
	}
	if !nameRE.MatchString(c.Cluster) {
		return fe("cluster", "%q is not a valid name (letters, digits, '.', '_', '-', at most 63)", c.Cluster)
	}
	if c.Node.Name == "" {
		return fe("node.name", "is required")
	}
	if !nameRE.MatchString(c.Node.Name) {
		return fe("node.name", "%q is not a valid name (letters, digits, '.', '_', '-', at most 63)", c.Node.Name)
	}
	if c.Postgres.PGData == "" {
		return fe("postgres.pgdata", "is required (the PostgreSQL data directory)")
	}
	if !filepath.IsAbs(c.Postgres.PGData) {
		return fe("postgres.pgdata", "%q must be an absolute path", c.Postgres.PGData)
	}
	if !filepath.IsAbs(c.Postgres.BinDir) {
		return fe("postgres.bindir", "%q must be an absolute path", c.Postgres.BinDir)
	}
	// The advertised DSN goes to the coordinator, which refuses one with a
	// control character (it would reach other nodes' primary_conninfo).
	if err := conninfo.Check(c.Postgres.DSN); err != nil {
		return fe("postgres.dsn", "%v", err)
	}
	if err := conninfo.Check(c.Node.AdvertiseDSN); err != nil {
		return fe("node.advertise_dsn", "%v", err)
	}
	if len(c.Repos) == 0 {
		return fe("repos", "at least one repository is required")
	}
	if len(c.Repos) > MaxRepos {
		return fe("repos", "%d repositories; at most %d", len(c.Repos), MaxRepos)
	}
	seen := map[string]bool{}
	sameRepo := map[string]int{}
	for i, r := range c.Repos {
		field := fmt.Sprintf("repos[%d]", i)
		if !nameRE.MatchString(r.Name) {
			return fe(field+".name", "%q is not a valid name", r.Name)
		}
		if seen[r.Name] {
			return fe(field+".name", "%q is used by two repositories", r.Name)
		}
		seen[r.Name] = true
		if err := validateRepoURL(r); err != nil {
			return fe(field+".url", "%v", err)
		}
		// Two entries for one repository would count as two copies
		// (an async "copy" being the sync repository itself).
		if j, ok := sameRepo[repoIdentity(r)]; ok {
			return fe(field+".url", "%q is the same repository as repos[%d] (%s): every repository must be a separate copy", r.URL, j, c.Repos[j].Name)
		}
		sameRepo[repoIdentity(r)] = i
		switch r.Mode {
		case ModeSync, ModeAsync, "":
		default:
			return fe(field+".mode", "%q is not a repository mode (sync or async)", r.Mode)
		}
		if r.CopyConcurrency < 0 || r.CopyConcurrency > 64 {
			return fe(field+".copy_concurrency", "%d is out of range (1 to 64)", r.CopyConcurrency)
		}
		if r.CopyConcurrency != 0 && !r.Async() {
			return fe(field+".copy_concurrency", "is only valid for a repository of mode async")
		}
		if r.S3 != nil {
			if !strings.HasPrefix(r.URL, "s3://") {
				return fe(field+".s3", "is only valid for an s3:// repository")
			}
			if r.S3.Endpoint != "" {
				u, err := url.Parse(r.S3.Endpoint)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return fe(field+".s3.endpoint", "%q is not an http(s) URL", r.S3.Endpoint)
				}
			}
			if (r.S3.AccessKeyIDFile == "") != (r.S3.SecretAccessKeyFile == "") {
				return fe(field+".s3", "access_key_id_file and secret_access_key_file must be set together")
			}
			if r.S3.PartSizeMB < 0 || (r.S3.PartSizeMB > 0 && r.S3.PartSizeMB < 5) {
				return fe(field+".s3.part_size_mb", "must be at least 5 (S3's minimum part size)")
			}
			if r.S3.MaxAttempts < 0 {
				return fe(field+".s3.max_attempts", "must not be negative")
			}
		}
	}
	if !slices.ContainsFunc(c.Repos, func(r Repo) bool { return !r.Async() }) {
		return fe("repos", "at least one repository must be of mode sync: wal-push and backups succeed once every sync repository holds what they wrote, async ones are copied from them")
	}
	if slices.ContainsFunc(c.Repos, Repo.Async) && c.Agent.StateDir != "" && !filepath.IsAbs(c.Agent.StateDir) {
		return fe("agent.state_dir", "%q must be an absolute path", c.Agent.StateDir)
	}
	if slices.ContainsFunc(c.Repos, Repo.Async) && c.Agent.StateDir == "" {
		return fe("agent.state_dir", "is required with an async repository (where the copy queue is kept)")
	}
	switch c.Compression.Method {
	case "zstd", "none":
	default:
		return fe("compression.method", "%q is not supported (zstd or none)", c.Compression.Method)
	}
	if c.Compression.Level < 1 || c.Compression.Level > 22 {
		return fe("compression.level", "%d is out of range 1..22", c.Compression.Level)
	}
	e := c.Encryption
	if e.Disabled && (len(e.Recipients) > 0 || e.RecipientsFile != "") {
		return fe("encryption", "disabled is set together with recipients; choose one")
	}
	if !e.Disabled && len(e.Recipients) == 0 && e.RecipientsFile == "" && e.IdentityFile == "" {
		return fe("encryption", "no recipients: set encryption.recipients (age1...), recipients_file or identity_file, or opt out explicitly with encryption: {disabled: true}")
	}
	for i, r := range e.Recipients {
		if !strings.HasPrefix(r, "age1") {
			return fe(fmt.Sprintf("encryption.recipients[%d]", i), "%q is not an age X25519 recipient (age1...)", r)
		}
	}
	if sg := c.Signing; sg.Require != nil && *sg.Require && !sg.Configured() {
		return fe("signing.require", "is set, but no key_file, public_keys or public_keys_file is")
	}
	for i, k := range c.Signing.PublicKeys {
		if !strings.HasPrefix(strings.TrimSpace(k), "pgdr-ed25519:") {
			return fe(fmt.Sprintf("signing.public_keys[%d]", i), "%q is not a signing public key (pgdr-ed25519:...)", k)
		}
	}
	if c.WAL.PushConcurrency < 1 || c.WAL.PushConcurrency > 64 {
		return fe("wal.push_concurrency", "%d is out of range 1..64", c.WAL.PushConcurrency)
	}
	if c.WAL.Prefetch < 0 || c.WAL.Prefetch > 128 {
		return fe("wal.prefetch", "%d is out of range 0..128", c.WAL.Prefetch)
	}
	if err := c.WAL.Receive.validate(); err != nil {
		return err
	}
	if err := c.validateSpoolPlace(); err != nil {
		return err
	}
	switch c.Agent.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fe("agent.log_level", "%q is not one of debug, info, warn, error", c.Agent.LogLevel)
	}
	if err := c.validateCommands(); err != nil {
		return err
	}
	if err := c.validateHooks(); err != nil {
		return err
	}
	return c.validateControl()
}

// validateControl checks the node's identity and the keys of the control
// path: health checks, coordinator and gossip.
func (c *Config) validateControl() error {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if c.Node.Region != "" && !nameRE.MatchString(c.Node.Region) {
		return fe("node.region", "%q is not a valid name (letters, digits, '.', '_', '-', at most 63)", c.Node.Region)
	}
	for i, tag := range c.Node.Tags {
		if !nameRE.MatchString(tag) {
			return fe(fmt.Sprintf("node.tags[%d]", i), "%q is not a valid tag (letters, digits, '.', '_', '-', at most 63)", tag)
		}
	}
	if c.Node.Priority < 0 || c.Node.Priority > math.MaxInt32 {
		return fe("node.priority", "%d is out of range 0..%d", c.Node.Priority, math.MaxInt32)
	}
	h := c.Health
	if h.Interval.invalid != "" {
		return fe("health.interval", "%q is not a duration (%s; e.g. 1s or 500ms)", h.Interval.text, h.Interval.invalid)
	}
	if h.Interval.Duration < 100*time.Millisecond || h.Interval.Duration > time.Hour {
		return fe("health.interval", "%s is out of range 100ms..1h", h.Interval.Duration)
	}
	if h.Listen != "" {
		if err := checkHostPort(h.Listen); err != nil {
			return fe("health.listen", "%v", err)
		}
	}
	if h.Advertise != "" {
		if err := checkHostPort(h.Advertise); err != nil {
			return fe("health.advertise", "%v", err)
		}
	}
	if h.MaxReplicaLag.invalid != "" {
		return fe("health.max_replica_lag", "%q is not a size in bytes (%s; e.g. 16777216 or 16MB)", h.MaxReplicaLag.text, h.MaxReplicaLag.invalid)
	}
	if h.MaxReplicaLag.Bytes < 0 {
		return fe("health.max_replica_lag", "must not be negative")
	}
	if ri := c.Metrics.RepoInterval; ri.invalid != "" {
		return fe("metrics.repo_interval", "%q is not a duration (%s; e.g. 60s or 5m)", ri.text, ri.invalid)
	} else if ri.Duration < time.Second || ri.Duration > 24*time.Hour {
		return fe("metrics.repo_interval", "%s is out of range 1s..24h", ri.Duration)
	}
	if hb := c.Heartbeat.Interval; hb.invalid != "" {
		return fe("heartbeat.interval", "%q is not a duration (%s; e.g. 1s or 500ms)", hb.text, hb.invalid)
	} else if hb.Duration < 100*time.Millisecond || hb.Duration > time.Minute {
		return fe("heartbeat.interval", "%s is out of range 100ms..1m", hb.Duration)
	}
	co := c.Coordinator
	for i, a := range co.Addresses {
		if err := checkHostPort(a); err != nil {
			return fe(fmt.Sprintf("coordinator.addresses[%d]", i), "%v", err)
		}
	}
	if len(co.Addresses) > 0 {
		if co.CAFile == "" {
			return fe("coordinator.ca_file", "is required with coordinator.addresses (the coordinators' API uses TLS)")
		}
		if co.CertFile == "" && co.TokenFile == "" {
			return fe("coordinator", "the agent must authenticate: set cert_file and key_file, or token_file")
		}
	}
	if (co.CertFile == "") != (co.KeyFile == "") {
		return fe("coordinator.cert_file", "cert_file and key_file must be set together")
	}
	g := c.Gossip
	if g.Bind != "" {
		if err := checkHostPort(g.Bind); err != nil {
			return fe("gossip.bind", "%v", err)
		}
		if g.KeyFile == "" {
			return fe("gossip.key_file", "is required with gossip.bind (the pool is encrypted with a shared key)")
		}
	}
	for i, a := range g.Join {
		if err := checkHostPort(a); err != nil {
			return fe(fmt.Sprintf("gossip.join[%d]", i), "%v", err)
		}
	}
	if len(g.Join) > 0 && g.Bind == "" {
		return fe("gossip.join", "needs gossip.bind (gossip is disabled without it)")
	}
	return c.validateFailover()
}

// validateFailover checks the lease timings: the agent must be able to
// renew at least once inside every lease (loop < lease_ttl - safety_margin).
func (c *Config) validateFailover() error {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	f := c.Failover
	for _, d := range []struct {
		field string
		v     Duration
		min   time.Duration
	}{{"failover.loop", f.Loop, 10 * time.Millisecond}, {"failover.lease_ttl", f.LeaseTTL, 100 * time.Millisecond}, {"failover.safety_margin", f.SafetyMargin, time.Millisecond}} {
		if d.v.invalid != "" {
			return fe(d.field, "%q is not a duration (%s; e.g. 1s or 500ms)", d.v.text, d.v.invalid)
		}
		if d.v.Duration < d.min || d.v.Duration > time.Hour {
			return fe(d.field, "%s is out of range %s..1h", d.v.Duration, d.min)
		}
	}
	if f.LeaseGatedCommits.invalid != "" {
		return fe("failover.lease_gated_commits", "%q is not on or off", f.LeaseGatedCommits.text)
	}
	if f.LeaseGatedCommits.On() && len(c.Coordinator.Addresses) == 0 {
		return fe("failover.lease_gated_commits", "needs coordinator.addresses: commits are gated on the primary lease the coordinators grant")
	}
	if f.SafetyMargin.Duration >= f.LeaseTTL.Duration {
		return fe("failover.safety_margin", "%s must be less than failover.lease_ttl (%s)", f.SafetyMargin.Duration, f.LeaseTTL.Duration)
	}
	if window := f.LeaseTTL.Duration - f.SafetyMargin.Duration; f.Loop.Duration >= window {
		return fe("failover.loop", "%s must be less than failover.lease_ttl - failover.safety_margin (%s), or the lease expires between two renewals", f.Loop.Duration, window)
	}
	return nil
}

// checkHostPort accepts host:port with a numeric port 1..65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("%q: host %q is not a host name or address", s, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", s, port)
	}
	return nil
}

func validateRepoURL(r Repo) error {
	if r.URL == "" {
		return errors.New("is required (file:///path or s3://bucket/prefix)")
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", r.URL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("%q: a file URL needs three slashes and an absolute path (file:///var/lib/pgdr/repo)", r.URL)
		}
		if u.Path == "" || !filepath.IsAbs(u.Path) {
			return fmt.Errorf("%q: a file repository needs an absolute path", r.URL)
		}
	case "s3":
		if u.Host == "" {
			return fmt.Errorf("%q: no bucket (s3://bucket/prefix)", r.URL)
		}
	case "":
		return fmt.Errorf("%q has no scheme (file:///path or s3://bucket/prefix)", r.URL)
	default:
		return fmt.Errorf("unknown repository scheme %q in %q (file or s3)", u.Scheme, r.URL)
	}
	return nil
}

// ReadSecretFile reads a secret from a file, trimming surrounding whitespace.
// The error names the file but never its content.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}

// repoIdentity names the storage r's URL points at: the URL without a
// trailing '/' (a file path cleaned), with an S3 repository's endpoint.
func repoIdentity(r Repo) string {
	if p, ok := strings.CutPrefix(r.URL, "file://"); ok {
		return "file://" + filepath.Clean(p)
	}
	endpoint := ""
	if r.S3 != nil {
		endpoint = strings.TrimRight(r.S3.Endpoint, "/")
	}
	return strings.TrimRight(r.URL, "/") + " at " + endpoint
}

// receiveDefaults applies wal.receive's defaults.
func (c *Config) receiveDefaults() {
	rc := &c.WAL.Receive
	if rc.Slot == "" && c.Node.Name != "" {
		rc.Slot = DefaultReceiveSlot(c.Node.Name)
	}
	if rc.SpoolDir == "" && c.Cluster != "" && c.Node.Name != "" && filepath.IsAbs(c.Postgres.PGData) {
		rc.SpoolDir = DefaultReceiveSpool(c.Postgres.PGData, c.Cluster, c.Node.Name)
	}
	if rc.UploadInterval.Duration == 0 && rc.UploadInterval.text == "" {
		rc.UploadInterval.Duration = DefaultUploadInterval
	}
}

// validateSpoolPlace refuses an enabled receiver's spool inside the data
// directory (PostgreSQL owns it: pg_wal's files are removed and recycled,
// a base backup copies it) or inside a file:// repository (its files
// would be read as the repository's objects).
func (c *Config) validateSpoolPlace() error {
	r := c.WAL.Receive
	if !r.Enabled || r.SpoolDir == "" {
		return nil
	}
	fe := func(format string, args ...any) error {
		return &FieldError{Field: "wal.receive.spool_dir", Msg: fmt.Sprintf(format, args...)}
	}
	if filepath.IsAbs(c.Postgres.PGData) && within(r.SpoolDir, c.Postgres.PGData) {
		return fe("%q is inside postgres.pgdata %q: the spool must be outside the data directory", r.SpoolDir, c.Postgres.PGData)
	}
	for i, repo := range c.Repos {
		if p, ok := strings.CutPrefix(repo.URL, "file://"); ok && filepath.IsAbs(p) && within(r.SpoolDir, p) {
			return fe("%q is inside the file repository repos[%d] (%s): the spool must be outside every repository", r.SpoolDir, i, repo.URL)
		}
	}
	return nil
}

// within reports whether path is dir or inside it (both absolute).
func within(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// validate checks wal.receive.
func (r WALReceive) validate() error {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Field: "wal.receive." + field, Msg: fmt.Sprintf(format, args...)}
	}
	if r.Synchronous && !r.Enabled {
		return fe("synchronous", "is set, but the receiver is not enabled (wal.receive.enabled)")
	}
	if !slotRE.MatchString(r.Slot) {
		return fe("slot", "%q is not a replication slot name (lower-case letters, digits and _, at most 63)", r.Slot)
	}
	if r.SpoolDir != "" && !filepath.IsAbs(r.SpoolDir) {
		return fe("spool_dir", "%q must be an absolute path", r.SpoolDir)
	}
	if r.Enabled && r.SpoolDir == "" {
		return fe("spool_dir", "is required (the default needs an absolute postgres.pgdata)")
	}
	if r.UploadInterval.invalid != "" {
		return fe("upload_interval", "%q is not a duration (%s; e.g. 1s or 500ms)", r.UploadInterval.text, r.UploadInterval.invalid)
	}
	if d := r.UploadInterval.Duration; d < 100*time.Millisecond || d > time.Minute {
		return fe("upload_interval", "%s is out of range 100ms..1m", d)
	}
	return nil
}
