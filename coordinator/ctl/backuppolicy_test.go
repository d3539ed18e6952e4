package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgdr/pgdr/coordinator/coordtest"
	"github.com/pgdr/pgdr/coordinator/policy"
	"github.com/pgdr/pgdr/pkg/tlsutil"
	pgdrv1 "github.com/pgdr/pgdr/proto/pgdr/v1"
)

// realCoordinator starts one real pgdr-coordinator process with cluster
// "main" registered by its agent, and returns a runner of pgdrctl (in
// process) authenticated with the token of role, and the cluster.
func realCoordinator(t *testing.T) (pgdrctl func(role string, args ...string) (int, string, string), c *coordtest.Cluster) {
	t.Helper()
	c = coordtest.Start(t, coordtest.Options{N: 1, Agents: []string{"pg-a1"}})
	leader := c.WaitLeader(60 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pgdrv1.NewAgentServiceClient(c.Conn(leader, "pg-a1")).Register(ctx, &pgdrv1.RegisterRequest{Member: &pgdrv1.Member{
		Cluster: "main", Name: "pg-a1", Region: "r1", Dsn: "host=127.0.0.1 port=5432"}}); err != nil {
		t.Fatalf("register pg-a1: %v", err)
	}
	pgdrctl = func(role string, args ...string) (int, string, string) {
		t.Helper()
		envs := map[string]string{"PGDR_ADDR": leader.APIAddr, "PGDR_CA": filepath.Join(c.CertDir, "ca.crt"), "PGDR_TOKEN": c.Tokens[role]}
		var out, errOut bytes.Buffer
		e := env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return envs[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return run(ctx, e, args), out.String(), errOut.String()
	}
	return pgdrctl, c
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func showJSON(t *testing.T, run func(string, ...string) (int, string, string)) PolicyShowJSON {
	t.Helper()
	code, out, errOut := run(tlsutil.RoleRead, "policy", "show", "--cluster", "main", "--json")
	var v PolicyShowJSON
	if err := json.Unmarshal([]byte(out), &v); code != ExitOK || err != nil || v.Backup == nil {
		t.Fatalf("policy show --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	return v
}

const goodPolicy = `cluster: main
pitr_window: 3d
tiers:
  - name: weekly
    type: full
    schedule: "0 2 * * 0"
    timezone: Europe/Berlin
    keep_count: 4
  - name: nightly
    type: incr
    schedule: "CRON_TZ=Europe/Berlin 0 2 * * 1-6"
    keep_age: 8d
    repos: [local, s3-eu]
    run_on: standby-only
    timeout: 90m
`

// TestBackupPolicyCommands runs policy show / set / apply against a real
// coordinator: the defaults show until a policy is applied; the read token
// can show but not change; apply sets the file's policy, recorded in the
// history under the admin's name; an invalid file (or one for another
// cluster) is refused naming the field and changes nothing; show --yaml
// gives back a file that applies unchanged; --pitr-window and
// --backup-defaults change the window or forget the policy.
func TestBackupPolicyCommands(t *testing.T) {
	run, _ := realCoordinator(t)
	admin, read := tlsutil.RoleAdmin, tlsutil.RoleRead

	code, out, errOut := run(read, "policy", "show", "--cluster", "main")
	if code != ExitOK || !strings.Contains(out, "cluster main backup policy (the defaults: none set)") ||
		!strings.Contains(out, "pitr_window: 7d") || !strings.Contains(out, "monthly") || !strings.Contains(out, "synchronous:") {
		t.Fatalf("policy show: exit %d\n%s%s", code, out, errOut)
	}
	v := showJSON(t, run)
	if !v.Backup.IsDefault || len(v.Backup.Tiers) != 4 || v.Backup.PITRWindowSeconds != 7*86400 ||
		v.Backup.Tiers[0].Name != "hourly" || v.Backup.Tiers[0].KeepAge != "7d" || v.Backup.Tiers[0].NextRun == "" {
		t.Fatalf("default backup policy: %+v", v.Backup)
	}

	file := writeFile(t, goodPolicy)
	code, _, errOut = run(read, "policy", "apply", "-f", file)
	if code != ExitFailure || !strings.Contains(errOut, "PermissionDenied") && !strings.Contains(errOut, "needs role admin") {
		t.Fatalf("apply with the read token: exit %d, %s", code, errOut)
	}
	if code, _, errOut = run(read, "policy", "set", "--cluster", "main", "--pitr-window", "1d"); code != ExitFailure || !strings.Contains(errOut, "admin") {
		t.Fatalf("set with the read token: exit %d, %s", code, errOut)
	}
	if v := showJSON(t, run); !v.Backup.IsDefault {
		t.Fatal("the read token changed the backup policy")
	}

	code, out, errOut = run(admin, "policy", "apply", "-f", file, "--json")
	var applied PolicyApplyJSON
	if err := json.Unmarshal([]byte(out), &applied); code != ExitOK || err != nil {
		t.Fatalf("apply: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	b := applied.Backup
	if !applied.Changed || b.IsDefault || b.PITRWindow != "3d" || len(b.Tiers) != 2 || b.UpdatedBy != "admin:admin-token" ||
		b.Tiers[1].Schedule != "0 2 * * 1-6" || b.Tiers[1].Timezone != "Europe/Berlin" || b.Tiers[1].Timeout != "1h30m" ||
		strings.Join(b.Tiers[1].Repos, ",") != "local,s3-eu" || b.Tiers[0].RunOn != "prefer-standby" {
		t.Fatalf("applied %+v", applied)
	}
	code, out, _ = run(read, "history", "--cluster", "main", "--json")
	if code != ExitOK || !strings.Contains(out, `"backup-policy-set"`) || !strings.Contains(out, "admin:admin-token") {
		t.Fatalf("history after apply: %s", out)
	}
	before := showJSON(t, run)
	historyBefore := out

	// Invalid files: refused before anything is sent, naming the field.
	for _, c := range []struct{ name, body, want string }{
		{"bad cron", strings.Replace(goodPolicy, `"0 2 * * 0"`, `"0 2 * *"`, 1), "tiers[0].schedule: "},
		{"negative keep_count", strings.Replace(goodPolicy, "keep_count: 4", "keep_count: -4", 1), "tiers[0].keep_count: -4 is negative"},
		{"retention shorter than the interval", strings.Replace(goodPolicy, "keep_age: 8d", "keep_age: 12h", 1), "tiers[1].keep_age: 12h is shorter"},
		{"incr without full", "cluster: main\ntiers:\n  - {name: i, type: incr, schedule: '@hourly', keep_age: 2d}\n", "tiers[0].type: incr tier \"i\" needs a full tier"},
		{"bad timezone", strings.Replace(goodPolicy, "timezone: Europe/Berlin", "timezone: Europe/Nowhere", 1), "tiers[0].timezone: "},
		{"duplicate tier", strings.Replace(goodPolicy, "name: nightly", "name: weekly", 1), "tiers[1].name: "},
		{"unknown key", strings.Replace(goodPolicy, "keep_count: 4", "keep_cnt: 4", 1), "keep_cnt"},
		{"not YAML", "tiers: [", "invalid YAML"},
	} {
		code, _, errOut := run(admin, "policy", "apply", "-f", writeFile(t, c.body))
		if code != ExitFailure || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want %q", c.name, code, errOut, c.want)
		}
	}
	if code, _, errOut := run(admin, "policy", "apply", "-f", file, "--cluster", "other"); code != ExitUsage || !strings.Contains(errOut, "is for cluster main") {
		t.Errorf("cluster mismatch: exit %d %s", code, errOut)
	}
	if code, _, errOut := run(admin, "policy", "apply", "-f", filepath.Join(t.TempDir(), "missing.yaml")); code != ExitFailure || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("missing file: exit %d %s", code, errOut)
	}
	if code, _, errOut := run(admin, "policy", "set", "--cluster", "main", "--pitr-window", "-1d"); code != ExitUsage || !strings.Contains(errOut, "negative") {
		t.Errorf("negative pitr window: exit %d %s", code, errOut)
	}
	// A dry run checks and prints, and sends nothing.
	code, out, errOut = run(admin, "policy", "apply", "-f", writeFile(t, strings.Replace(goodPolicy, "3d", "9d", 1)), "--dry-run")
	if code != ExitOK || !strings.Contains(out, "not sent (--dry-run)") || !strings.Contains(out, "pitr_window: 9d") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	after := showJSON(t, run)
	if !jsonEqual(t, before.Backup, after.Backup) {
		t.Fatalf("refused input changed the policy:\nbefore %+v\nafter  %+v", before.Backup, after.Backup)
	}
	if _, out, _ := run(read, "history", "--cluster", "main", "--json"); out != historyBefore {
		t.Fatalf("refused input was recorded in the history:\n%s", out)
	}

	// show --yaml is a file that applies unchanged.
	code, out, errOut = run(read, "policy", "show", "--cluster", "main", "--yaml")
	if code != ExitOK {
		t.Fatalf("show --yaml: exit %d %s", code, errOut)
	}
	if _, p, err := policy.ParseFile([]byte(out)); err != nil || len(p.Tiers) != 2 || p.PITRWindow != 3*policy.Day {
		t.Fatalf("show --yaml does not parse back: %v\n%s", err, out)
	}
	code, out, errOut = run(admin, "policy", "apply", "-f", writeFile(t, out))
	if code != ExitOK || !strings.HasPrefix(out, "unchanged: cluster main already had this backup policy") {
		t.Fatalf("re-apply of show --yaml: exit %d\n%s%s", code, out, errOut)
	}

	// --pitr-window changes only the window; --backup-defaults forgets it all.
	code, out, errOut = run(admin, "policy", "set", "--cluster", "main", "--pitr-window", "14d", "--json")
	if err := json.Unmarshal([]byte(out), &applied); code != ExitOK || err != nil || applied.Backup.PITRWindow != "2w" || len(applied.Backup.Tiers) != 2 {
		t.Fatalf("set --pitr-window: exit %d %v\n%s%s", code, err, out, errOut)
	}
	// --target-* change only the targets given; a non-positive one is refused naming the flag.
	code, out, errOut = run(admin, "policy", "set", "--cluster", "main", "--target-rpo", "1ms", "--target-failover", "2m", "--json")
	if err := json.Unmarshal([]byte(out), &applied); code != ExitOK || err != nil || applied.Backup.PITRWindow != "2w" ||
		applied.Backup.Targets.RPO != "1ms" || applied.Backup.Targets.Failover != "2m" || applied.Backup.Targets.RTO != "15m" {
		t.Fatalf("set --target-*: exit %d %v\n%s%s", code, err, out, errOut)
	}
	code, out, errOut = run(admin, "policy", "set", "--cluster", "main", "--target-write-availability", "99.95%", "--json")
	if err := json.Unmarshal([]byte(out), &applied); code != ExitOK || err != nil || applied.Backup.Targets.WriteAvailability != "99.95%" ||
		applied.Backup.Targets.RPO != "1ms" {
		t.Fatalf("set --target-write-availability: exit %d %v\n%s%s", code, err, out, errOut)
	}
	for _, bad := range [][]string{{"--target-rto", "0s"}, {"--target-rpo", "-1m"}, {"--target-failover", "soon"},
		{"--target-write-availability", "100%"}, {"--target-write-availability", "often"}} {
		if code, _, errOut := run(admin, append([]string{"policy", "set", "--cluster", "main"}, bad...)...); code != ExitUsage || !strings.Contains(errOut, bad[0]) {
			t.Errorf("%v: exit %d %s", bad, code, errOut)
		}
	}
	if v := showJSON(t, run); v.Backup.Targets.RPOSeconds != 0.001 {
		t.Fatalf("refused targets changed the policy: %+v", v.Backup.Targets)
	}
	if code, _, errOut := run(admin, "policy", "set", "--cluster", "main", "--pitr-window", "1d", "--synchronous", "on"); code != ExitUsage || !strings.Contains(errOut, "separate commands") {
		t.Errorf("mixed failover and backup settings: exit %d %s", code, errOut)
	}
	code, out, errOut = run(admin, "policy", "set", "--cluster", "main", "--backup-defaults")
	if code != ExitOK || !strings.Contains(out, "the defaults: none set") {
		t.Fatalf("set --backup-defaults: exit %d\n%s%s", code, out, errOut)
	}
	if v := showJSON(t, run); !v.Backup.IsDefault {
		t.Fatal("--backup-defaults left a policy")
	}
	if code, out, _ := run(read, "policy", "apply", "--help"); code != ExitOK {
		t.Fatalf("policy apply --help: exit %d %s", code, out)
	}
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return bytes.Equal(ja, jb)
}

// TestPolicyFileExample: the example in `policy apply --help` is a valid
// policy file.
func TestPolicyFileExample(t *testing.T) {
	cluster, p, err := policy.ParseFile([]byte(policyFileExample))
	if err == nil {
		err = p.Validate(policy.Options{})
	}
	if err != nil || cluster != "main" || len(p.Tiers) != 1 {
		t.Fatalf("the help's example: %v (%q, %+v)", err, cluster, p)
	}
}
