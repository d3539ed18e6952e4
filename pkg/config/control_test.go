package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const minimal = "cluster: c\nnode: {name: n}\npostgres: {pgdata: /d, dsn: 'host=127.0.0.1 port=5432 user=postgres password=s3cret'}\nrepos: [{url: 'file:///r'}]\nencryption: {disabled: true}\n"

func TestControlDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Health.Interval.Duration != time.Second {
		t.Errorf("health.interval = %s, want 1s", cfg.Health.Interval)
	}
	if cfg.Health.Listen != "127.0.0.1:8543" {
		t.Errorf("health.listen = %q, want 127.0.0.1:8543", cfg.Health.Listen)
	}
	if cfg.Health.MaxReplicaLag.Bytes != 16<<20 {
		t.Errorf("health.max_replica_lag = %d, want 16MB", cfg.Health.MaxReplicaLag.Bytes)
	}
	if cfg.Node.AdvertiseDSN != cfg.Postgres.DSN {
		t.Errorf("node.advertise_dsn = %q, want postgres.dsn", cfg.Node.AdvertiseDSN)
	}
	if len(cfg.Coordinator.Addresses) != 0 || cfg.Gossip.Bind != "" || cfg.Node.Priority != 0 {
		t.Errorf("standalone by default: %+v %+v", cfg.Coordinator, cfg.Gossip)
	}
}

func TestControlKeys(t *testing.T) {
	cfg, err := Parse([]byte(strings.Replace(minimal, "node: {name: n}\n", "", 1) + `
node: {name: n, region: eu-west-1, tags: [no-failover], priority: 7, advertise_dsn: "host=10.0.0.5 port=5432"}
health: {interval: 250ms, listen: "", max_replica_lag: 64MB}
coordinator:
  addresses: ["127.0.0.1:7101", "[::1]:7102", "coord-3.example:7103"]
  ca_file: /etc/pgdr/ca.pem
  token_file: /etc/pgdr/agent.token
gossip: {bind: "127.0.0.1:7946", join: ["127.0.0.1:7947"], key_file: /etc/pgdr/gossip.key}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Region != "eu-west-1" || cfg.Node.Priority != 7 || len(cfg.Node.Tags) != 1 || cfg.Node.AdvertiseDSN != "host=10.0.0.5 port=5432" {
		t.Errorf("node: %+v", cfg.Node)
	}
	if cfg.Health.Interval.Duration != 250*time.Millisecond || cfg.Health.Listen != "" || cfg.Health.MaxReplicaLag.Bytes != 64<<20 {
		t.Errorf("health: %+v (an explicit empty listen disables the server)", cfg.Health)
	}
	if len(cfg.Coordinator.Addresses) != 3 || cfg.Coordinator.TokenFile == "" || cfg.Gossip.Join[0] != "127.0.0.1:7947" {
		t.Errorf("coordinator/gossip: %+v %+v", cfg.Coordinator, cfg.Gossip)
	}
	cfg, err = Parse([]byte(minimal + "health: {max_replica_lag: 0}\n"))
	if err != nil || cfg.Health.MaxReplicaLag.Bytes != 0 {
		t.Errorf("an explicit max_replica_lag: 0 is kept: %v %+v", err, cfg)
	}
}

func TestByteSizes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1234": 1234, "8kB": 8 << 10, "16MB": 16 << 20, "16 MiB": 16 << 20, "2GB": 2 << 30, "1tb": 1 << 40} {
		cfg, err := Parse([]byte(minimal + "health: {max_replica_lag: '" + in + "'}\n"))
		if err != nil || cfg.Health.MaxReplicaLag.Bytes != want {
			t.Errorf("max_replica_lag %q: %v, %+v, want %d", in, err, cfg, want)
		}
	}
}

func TestControlErrorsNameTheField(t *testing.T) {
	coord := "coordinator: {addresses: ['127.0.0.1:7101'], ca_file: /ca, token_file: /tok}\n"
	cases := []struct{ name, add, field string }{
		{"bad interval", "health: {interval: soon}\n", "health.interval"},
		{"interval without unit", "health: {interval: 5}\n", "health.interval"},
		{"zero interval", "health: {interval: 0s}\n", "health.interval"},
		{"interval as a list", "health: {interval: [1s]}\n", "health.interval"},
		{"bad listen", "health: {listen: 'localhost'}\n", "health.listen"},
		{"bad listen port", "health: {listen: '127.0.0.1:http'}\n", "health.listen"},
		{"listen port range", "health: {listen: '127.0.0.1:70000'}\n", "health.listen"},
		{"bad lag", "health: {max_replica_lag: lots}\n", "health.max_replica_lag"},
		{"bad lag unit", "health: {max_replica_lag: 16XB}\n", "health.max_replica_lag"},
		{"negative lag", "health: {max_replica_lag: -1}\n", "health.max_replica_lag"},
		{"unknown health key", "health: {intervall: 1s}\n", "intervall"},
		{"bad heartbeat interval", "heartbeat: {interval: often}\n", "heartbeat.interval"},
		{"heartbeat interval too short", "heartbeat: {interval: 10ms}\n", "heartbeat.interval"},
		{"heartbeat interval too long", "heartbeat: {interval: 2m}\n", "heartbeat.interval"},
		{"bad coordinator address", "coordinator: {addresses: ['127.0.0.1:7101', 'coord2'], ca_file: /ca, token_file: /tok}\n", "coordinator.addresses[1]"},
		{"coordinator without CA", "coordinator: {addresses: ['127.0.0.1:7101'], token_file: /tok}\n", "coordinator.ca_file"},
		{"coordinator without credentials", "coordinator: {addresses: ['127.0.0.1:7101'], ca_file: /ca}\n", "coordinator"},
		{"cert without key", "coordinator: {addresses: ['127.0.0.1:7101'], ca_file: /ca, cert_file: /c}\n", "coordinator.cert_file"},
		{"inline token", "coordinator: {addresses: ['127.0.0.1:7101'], ca_file: /ca, token: abc}\n", "token"},
		{"bad gossip bind", "gossip: {bind: '127.0.0.1', key_file: /k}\n", "gossip.bind"},
		{"gossip without key", "gossip: {bind: '127.0.0.1:7946'}\n", "gossip.key_file"},
		{"bad gossip join", "gossip: {bind: '127.0.0.1:7946', key_file: /k, join: ['x']}\n", "gossip.join[0]"},
		{"join without bind", "gossip: {join: ['127.0.0.1:7946']}\n", "gossip.join"},
		{"bad region", "node: {name: n, region: 'us east'}\n", "node.region"},
		{"bad tag", "node: {name: n, tags: [ok, '']}\n", "node.tags[1]"},
		{"negative priority", "node: {name: n, priority: -1}\n", "node.priority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := minimal
			if strings.HasPrefix(c.add, "node:") {
				base = strings.Replace(base, "node: {name: n}\n", "", 1)
			}
			_, err := Parse([]byte(base + c.add))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name %s", err, c.field)
			}
			var fe *FieldError
			if strings.Contains(c.field, ".") && (!errors.As(err, &fe) || fe.Field != c.field) {
				t.Fatalf("want a FieldError on %s, got %#v", c.field, err)
			}
		})
	}
	if _, err := Parse([]byte(minimal + coord)); err != nil {
		t.Fatalf("a coordinator with a CA and a token: %v", err)
	}
}

func TestFailoverKeys(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.Failover; f.Loop.Duration != time.Second || f.LeaseTTL.Duration != 5*time.Second || f.SafetyMargin.Duration != time.Second {
		t.Errorf("failover defaults: %+v", f)
	}
	cfg, err = Parse([]byte(minimal + "failover: {loop: 500ms, lease_ttl: 3s, safety_margin: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.Failover; f.Loop.Duration != 500*time.Millisecond || f.LeaseTTL.Duration != 3*time.Second || f.SafetyMargin.Duration != time.Second {
		t.Errorf("failover: %+v", f)
	}
	for _, c := range []struct{ yaml, field string }{
		{"failover: {safety_margin: 5s}", "failover.safety_margin"},
		{"failover: {lease_ttl: 2s, safety_margin: 3s}", "failover.safety_margin"},
		{"failover: {loop: 4s}", "failover.loop"},
		{"failover: {loop: 3s, lease_ttl: 4s, safety_margin: 1s}", "failover.loop"},
		{"failover: {lease_ttl: soon}", "failover.lease_ttl"},
		{"failover: {loop: 0s}", "failover.loop"},
		{"failover: {safety_margin: -1s}", "failover.safety_margin"},
	} {
		_, err := Parse([]byte(minimal + c.yaml + "\n"))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: error %v, want one naming %s", c.yaml, err, c.field)
		}
	}
}

func TestHeartbeatConfig(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Heartbeat.On() || cfg.Heartbeat.Interval.Duration != time.Second {
		t.Fatalf("default heartbeat: %+v, want on every 1s", cfg.Heartbeat)
	}
	cfg, err = Parse([]byte(minimal + "heartbeat: {enabled: false, interval: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Heartbeat.On() || cfg.Heartbeat.Interval.Duration != 5*time.Second {
		t.Fatalf("heartbeat: %+v, want off, 5s", cfg.Heartbeat)
	}
}

func TestLeaseGatedCommitsKey(t *testing.T) {
	coord := "coordinator: {addresses: ['127.0.0.1:7101'], ca_file: /ca, token_file: /tok}\n"
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Failover.LeaseGatedCommits.On() {
		t.Error("lease_gated_commits is on by default")
	}
	for _, v := range []string{"on", "true", "yes"} {
		cfg, err := Parse([]byte(minimal + coord + "failover: {lease_gated_commits: " + v + "}\n"))
		if err != nil || !cfg.Failover.LeaseGatedCommits.On() {
			t.Errorf("lease_gated_commits: %s: on=%v err=%v", v, cfg != nil && cfg.Failover.LeaseGatedCommits.On(), err)
		}
	}
	if cfg, err := Parse([]byte(minimal + "failover: {lease_gated_commits: off}\n")); err != nil || cfg.Failover.LeaseGatedCommits.On() {
		t.Errorf("lease_gated_commits: off: %v", err)
	}
	for _, y := range []string{
		"failover: {lease_gated_commits: maybe}",
		"failover: {lease_gated_commits: on}", // no coordinators: no lease to gate on
	} {
		_, err := Parse([]byte(minimal + y + "\n"))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "failover.lease_gated_commits" {
			t.Errorf("%s: error %v, want one naming failover.lease_gated_commits", y, err)
		}
	}
}
