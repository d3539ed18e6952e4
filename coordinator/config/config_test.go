package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `name: c1
region: us-east-1
data_dir: /var/lib/pgdr/c1
raft: {bind: "127.0.0.1:7001"}
api: {listen: "127.0.0.1:7101"}
tls: {ca_file: ca.crt, cert_file: c1.crt, key_file: c1.key}
bootstrap:
  - {name: c1, raft_address: "127.0.0.1:7001", api_address: "127.0.0.1:7101"}
  - {name: c2, raft_address: "127.0.0.1:7002", api_address: "127.0.0.1:7102"}
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Raft.Advertise != "127.0.0.1:7001" || c.API.Advertise != "127.0.0.1:7101" {
		t.Fatalf("advertise defaults: %+v %+v", c.Raft, c.API)
	}
	if c.Raft.SnapshotThreshold != 8192 || c.Health.StaleAfter.Seconds() != 3 || c.LogLevel != "info" || c.Slots.DropInactiveAfter.Duration != DefaultSlotDropAfter || c.Slots.Disabled {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct{ edit, field string }{
		{"name: c1\n", "name: 'bad name'\n"},
		{"region: us-east-1\n", "region: ''\n"},
		{"api: {listen: \"127.0.0.1:7101\"}", "api: {listen: \"nowhere\"}"},
		{"tls: {ca_file: ca.crt, ", "tls: {"},
		{"  - {name: c2,", "  - {name: c1,"},
		{"raft: {bind: \"127.0.0.1:7001\"}", "raft: {bind: \"127.0.0.1:7001\", election_timeout: soon}"},
		{"region: us-east-1\n", "region: us-east-1\nunknown_key: 1\n"},
		{"region: us-east-1\n", "region: us-east-1\ngossip: {bind: \"127.0.0.1:7301\"}\n"},
		{"region: us-east-1\n", "region: us-east-1\nlog_level: loud\n"},
		{"region: us-east-1\n", "region: us-east-1\nslots: {drop_inactive_after: 10s}\n"},
	}
	wants := []string{"name", "region", "api.listen", "tls.ca_file", "bootstrap[1].name", "duration", "unknown_key", "gossip.key_file", "log_level", "slots.drop_inactive_after"}
	for i, tc := range cases {
		src := strings.Replace(good, tc.edit, tc.field, 1)
		if src == good {
			t.Fatalf("case %d: edit %q did not apply", i, tc.edit)
		}
		_, err := Parse([]byte(src))
		if err == nil || !strings.Contains(err.Error(), wants[i]) {
			t.Errorf("case %d: error %v does not name %q", i, err, wants[i])
		}
	}
	noSelf := strings.Replace(good, "  - {name: c1, raft_address: \"127.0.0.1:7001\", api_address: \"127.0.0.1:7101\"}\n", "", 1)
	if _, err := Parse([]byte(noSelf)); err == nil || !strings.Contains(err.Error(), "bootstrap") {
		t.Errorf("bootstrap without this coordinator: %v", err)
	}
}

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(p, []byte("- {name: ops, role: admin, sha256: "+HashToken("s3cret")+"}\n"), 0o600)
	tk, err := LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	if tok, ok := tk.Lookup("s3cret"); !ok || tok.Role != "admin" || tok.Name != "ops" {
		t.Fatalf("lookup: %+v %v", tok, ok)
	}
	if _, ok := tk.Lookup("wrong"); ok {
		t.Fatal("wrong secret matched")
	}
	for _, bad := range []struct{ yaml, field string }{
		{"- {name: x, role: root, sha256: " + HashToken("a") + "}\n", "role"},
		{"- {name: x, role: read, sha256: abc}\n", "sha256"},
		{"- {role: read, sha256: " + HashToken("a") + "}\n", "name"},
		// Agent tokens are bound to one node of one cluster.
		{"- {name: x, role: agent, sha256: " + HashToken("a") + "}\n", "cluster"},
		{"- {name: x, role: agent, cluster: main, sha256: " + HashToken("a") + "}\n", "node"},
		{"- {name: x, role: agent, cluster: 'a b', node: pg-a, sha256: " + HashToken("a") + "}\n", "cluster"},
		{"- {name: x, role: agent, cluster: main, node: ../x, sha256: " + HashToken("a") + "}\n", "node"},
		{"- {name: x, role: admin, node: pg-a, sha256: " + HashToken("a") + "}\n", "agent tokens only"},
	} {
		os.WriteFile(p, []byte(bad.yaml), 0o600)
		if _, err := LoadTokens(p); err == nil || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("%q: %v; want an error naming %s", bad.yaml, err, bad.field)
		}
	}
	os.WriteFile(p, []byte("- {name: a1, role: agent, cluster: main, node: pg-a, sha256: "+HashToken("agent-secret")+"}\n"), 0o600)
	if tk, err = LoadTokens(p); err != nil {
		t.Fatal(err)
	}
	if tok, ok := tk.Lookup("agent-secret"); !ok || tok.Cluster != "main" || tok.Node != "pg-a" {
		t.Fatalf("agent token lookup: %+v %v", tok, ok)
	}
}

func TestExampleConfigParses(t *testing.T) {
	data, err := os.ReadFile("../../deploy/pgdr-coordinator.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Fatalf("deploy/pgdr-coordinator.example.yaml: %v", err)
	}
}
