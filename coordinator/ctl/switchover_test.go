package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// The fake's write calls of this file record their requests here (keyed by
// fake, so that parallel tests do not see each other's).
var (
	changesMu sync.Mutex
	changes   = map[*fakeAdmin][]any{}
)

func (f *fakeAdmin) recordChange(req any) {
	changesMu.Lock()
	defer changesMu.Unlock()
	changes[f] = append(changes[f], req)
}

func (f *fakeAdmin) changes() []any {
	changesMu.Lock()
	defer changesMu.Unlock()
	return changes[f]
}

func (f *fakeAdmin) Switchover(_ context.Context, r *pgdrv1.SwitchoverRequest) (*pgdrv1.SwitchoverResponse, error) {
	f.recordChange(r)
	to := r.GetTo()
	if to == "" {
		to = "pg-a2"
	}
	if to == "pg-b1" {
		return nil, status.Error(codes.FailedPrecondition, "refused: to: pg-b1 cannot take over: tagged no-failover")
	}
	return &pgdrv1.SwitchoverResponse{Primary: to, Epoch: 4, Steps: []string{
		"switch over from pg-a1 to " + to, "pg-a1 stopped cleanly: shutdown checkpoint at 0/3000060", "done: " + to + " is primary at epoch 4"}}, nil
}

func (f *fakeAdmin) Failover(_ context.Context, r *pgdrv1.FailoverRequest) (*pgdrv1.FailoverResponse, error) {
	f.recordChange(r)
	if !r.GetForce() {
		return nil, status.Error(codes.FailedPrecondition, "refused: the primary pg-a1 is healthy (running, connectable, writable); use 'pgdrctl switchover'")
	}
	return &pgdrv1.FailoverResponse{Primary: r.GetTo(), Epoch: 4, Steps: []string{"promote " + r.GetTo(), "done"}}, nil
}

func (f *fakeAdmin) SetPolicy(_ context.Context, r *pgdrv1.SetPolicyRequest) (*pgdrv1.SetPolicyResponse, error) {
	f.recordChange(r)
	return &pgdrv1.SetPolicyResponse{Policy: r.GetPolicy()}, nil
}

func TestSwitchoverCommand(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := &fakeAdmin{name: "c1"}
	addr := l.serve(t, f)
	l.env["PGDR_ADDR"] = addr
	l.env["PGDR_TOKEN_FILE"] = l.tokenFile(t)

	if code, _, errOut := l.run(t, "switchover", "--to", "pg-a2"); code != ExitUsage || !strings.Contains(errOut, "--cluster is required") {
		t.Errorf("switchover without --cluster: exit %d: %s", code, errOut)
	}
	if len(f.seen()) != 0 {
		t.Fatalf("a usage error reached the server: %v", f.seen())
	}
	code, out, errOut := l.run(t, "switchover", "--cluster", "main", "--to", "pg-a2")
	if code != ExitOK || !strings.Contains(out, "switchover of cluster main: pg-a2 is primary at epoch 4") ||
		!strings.Contains(out, " 2. pg-a1 stopped cleanly") {
		t.Errorf("switchover: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = l.run(t, "switchover", "--cluster", "main", "--json")
	var v PrimaryChangeJSON
	if err := json.Unmarshal([]byte(out), &v); code != ExitOK || err != nil || v.Primary != "pg-a2" || v.Epoch != 4 || len(v.Steps) != 3 || v.Cluster != "main" {
		t.Errorf("switchover --json: exit %d err %v\n%s", code, err, out)
	}
	code, out, errOut = l.run(t, "switchover", "--cluster", "main", "--to", "pg-b1")
	if code != ExitFailure || out != "" || !strings.Contains(errOut, "pgdrctl: Switchover: refused: to: pg-b1 cannot take over: tagged no-failover") {
		t.Errorf("refused switchover: exit %d stdout %q stderr %q", code, out, errOut)
	}
	reqs := f.changes()
	if len(reqs) != 3 || reqs[0].(*pgdrv1.SwitchoverRequest).GetTo() != "pg-a2" || reqs[1].(*pgdrv1.SwitchoverRequest).GetTo() != "" {
		t.Errorf("the server got %v", reqs)
	}
	if code, out, _ := l.run(t, "help", "switchover"); code != ExitOK && !strings.Contains(out, "zero data loss") {
		t.Errorf("help switchover: exit %d", code)
	}
}

func TestFailoverCommand(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := &fakeAdmin{name: "c1"}
	addr := l.serve(t, f)
	l.env["PGDR_ADDR"] = addr
	l.env["PGDR_TOKEN_FILE"] = l.tokenFile(t)

	if code, _, errOut := l.run(t, "failover", "--cluster", "main"); code != ExitUsage || !strings.Contains(errOut, "--to is required") {
		t.Errorf("failover without --to: exit %d: %s", code, errOut)
	}
	if len(f.seen()) != 0 {
		t.Fatalf("a usage error reached the server: %v", f.seen())
	}
	code, out, errOut := l.run(t, "failover", "--cluster", "main", "--to", "pg-a2")
	if code != ExitFailure || out != "" || !strings.Contains(errOut, "refused: the primary pg-a1 is healthy") {
		t.Errorf("refused failover: exit %d stdout %q stderr %q", code, out, errOut)
	}
	code, out, errOut = l.run(t, "failover", "--cluster", "main", "--to", "pg-a2", "--force", "--json")
	var v PrimaryChangeJSON
	if err := json.Unmarshal([]byte(out), &v); code != ExitOK || err != nil || v.Primary != "pg-a2" || len(v.Steps) != 2 {
		t.Errorf("failover --force --json: exit %d err %v\n%s", code, err, out)
	}
	if !strings.Contains(errOut, "--force") || !strings.Contains(errOut, "lost") {
		t.Errorf("failover --force does not warn on stderr: %q", errOut)
	}
	reqs := f.changes()
	if len(reqs) != 2 || reqs[0].(*pgdrv1.FailoverRequest).GetForce() || !reqs[1].(*pgdrv1.FailoverRequest).GetForce() {
		t.Errorf("the server got %v", reqs)
	}
	code, _, errOut = l.run(t, "failover", "--help")
	if code != ExitOK || !strings.Contains(errOut, "WARNING") || !strings.Contains(errOut, "LOST") {
		t.Errorf("failover --help: exit %d\n%s", code, errOut)
	}
}

func TestPolicyCommands(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	f := &fakeAdmin{name: "c1"}
	addr := l.serve(t, f)
	l.env["PGDR_ADDR"] = addr
	l.env["PGDR_TOKEN_FILE"] = l.tokenFile(t)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"policy"}, "needs a subcommand"},
		{[]string{"policy", "frob"}, "unknown policy command"},
		{[]string{"policy", "set", "--synchronous", "on"}, "--cluster is required"},
		{[]string{"policy", "set", "--cluster", "main"}, "nothing to set"},
		{[]string{"policy", "set", "--cluster", "main", "--synchronous", "sometimes"}, "--synchronous"},
		{[]string{"policy", "set", "--cluster", "main", "--synchronous", "quorum 0"}, "N >= 1"},
		{[]string{"policy", "set", "--cluster", "main", "--maximum-lag", "lots"}, "--maximum-lag"},
		{[]string{"policy", "set", "--cluster", "main", "--failsafe", "maybe"}, "--failsafe"},
		{[]string{"policy", "set", "--cluster", "main", "--preferred-regions", "a,b,a"}, "listed twice"},
	} {
		code, _, errOut := l.run(t, c.args...)
		if code != ExitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, code, errOut, c.want)
		}
	}
	if len(f.seen()) != 0 {
		t.Fatalf("a usage error reached the server: %v", f.seen())
	}

	code, out, errOut := l.run(t, "policy", "show", "--cluster", "main")
	if code != ExitOK || !strings.Contains(out, "paused:                  YES") || !strings.Contains(out, "synchronous:             off") ||
		!strings.Contains(out, "1048576 bytes (the default)") || !strings.Contains(out, "failsafe:                on") {
		t.Errorf("policy show: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = l.run(t, "policy", "set", "--cluster", "main", "--synchronous", "quorum", "2", "--maximum-lag", "16MB",
		"--preferred-regions", "us-east-1, us-west-2", "--failsafe", "off", "--json")
	var v PolicyShowJSON
	if err := json.Unmarshal([]byte(out), &v); code != ExitOK || err != nil {
		t.Fatalf("policy set --json: exit %d err %v\n%s%s", code, err, out, errOut)
	}
	if v.Policy.Synchronous != "quorum 2" || v.Policy.MaximumLagOnFailover != 16<<20 || v.Failsafe ||
		strings.Join(v.Policy.PreferredRegions, ",") != "us-east-1,us-west-2" {
		t.Errorf("policy set answered %+v", v)
	}
	// Only the settings given change: a second set keeps the others.
	if code, _, errOut := l.run(t, "policy", "set", "--cluster", "main", "--synchronous", "quorum:1"); code != ExitOK {
		t.Fatalf("policy set quorum:1: exit %d %s", code, errOut)
	}
	reqs := f.changes()
	if len(reqs) != 2 {
		t.Fatalf("the server got %v", reqs)
	}
	p := reqs[1].(*pgdrv1.SetPolicyRequest).GetPolicy()
	if p.GetSynchronous() != "quorum 1" || p.GetMaximumLagOnFailover() != 0 || p.GetFailsafeDisabled() {
		t.Errorf("second set sent %v (the fake's status policy is the base, with only synchronous changed)", p)
	}
}

func TestParseBytesAndSynchronous(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]uint64{"0": 0, "1048576": 1 << 20, "512kB": 512 << 10, "16MB": 16 << 20, "1 GB": 1 << 30, "100b": 100} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1TB", "MB", "1.5MB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{"OFF": "off", " on ": "on", "quorum 2": "quorum 2", "quorum:3": "quorum 3", "quorum=1": "quorum 1"} {
		if got, err := normalizeSynchronous(in); err != nil || got != want {
			t.Errorf("normalizeSynchronous(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yes", "quorum", "quorum 0", "quorum x"} {
		if _, err := normalizeSynchronous(bad); err == nil {
			t.Errorf("normalizeSynchronous(%q) accepted", bad)
		}
	}
}
