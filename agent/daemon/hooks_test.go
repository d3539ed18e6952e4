package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// hookScript writes a shell script that appends one line per run to out:
// the PGDR_ variables, then sleeps for $HOOK_SLEEP and exits $HOOK_EXIT.
func hookScript(t *testing.T, out, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.sh")
	script := fmt.Sprintf(`#!/bin/sh
printf 'role=%%s previous=%%s cluster=%%s node=%%s epoch=%%s args=%%s\n' "$PGDR_ROLE" "$PGDR_PREVIOUS_ROLE" "$PGDR_CLUSTER" "$PGDR_NODE" "$PGDR_EPOCH" "$*" >>%s
echo "hook says hello"
%s
`, out, body)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func hookConfig(t *testing.T, hooks string) *config.Config {
	t.Helper()
	pgdata := testutil.FakePGData(t, 7300000000000000123)
	cfg, err := config.Parse([]byte(fmt.Sprintf(
		"cluster: main\nnode: {name: n1}\npostgres: {pgdata: %s, dsn: 'host=127.0.0.1 port=1 connect_timeout=1'}\nrepos: [{url: 'file://%s'}]\nencryption: {disabled: true}\nhealth: {listen: ''}\nhooks: %s\n",
		pgdata, t.TempDir(), hooks)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// hookRuns reads pgdr_agent_hook_runs_total{result} from reg.
func hookRuns(t *testing.T, reg prometheus.Gatherer, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pgdr_agent_hook_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no pgdr_agent_hook_runs_total{result=%q}", result)
	return 0
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// TestRoleChangeHook: the hook runs once per change with the PGDR_
// environment, not for repeated or unknown roles, and its results are
// counted.
func TestRoleChangeHook(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env.log")
	script := hookScript(t, out, "exit 0")
	cfg := hookConfig(t, fmt.Sprintf("{on_role_change: [%s, --flag, 'two words'], timeout: 5s}", script))
	reg := prometheus.NewRegistry()
	h := newHookRunner(cfg, slog.New(slog.DiscardHandler), reg)

	h.observe("replica", 3)
	h.wait()
	h.observe("replica", 3) // no change
	h.observe("unknown", 3) // not a role
	h.observe("replica", 4)
	h.wait()
	h.observe("primary", 5)
	h.wait()
	want := []string{
		"role=replica previous= cluster=main node=n1 epoch=3 args=--flag two words",
		"role=primary previous=replica cluster=main node=n1 epoch=5 args=--flag two words",
	}
	if got := readLines(t, out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hook runs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := hookRuns(t, reg, hookOK); n != 2 {
		t.Errorf("ok runs = %v, want 2", n)
	}
}

// TestRoleChangeHookCoalesces: while a run is in progress, only the latest
// role waits; observe never blocks.
func TestRoleChangeHookCoalesces(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env.log")
	gate := filepath.Join(t.TempDir(), "gate")
	// The first run waits for the gate file; later runs do not.
	script := hookScript(t, out, fmt.Sprintf(`if [ "$PGDR_ROLE" = primary ]; then while [ ! -e %s ]; do sleep 0.02; done; fi`, gate))
	cfg := hookConfig(t, fmt.Sprintf("{on_role_change: [%s]}", script))
	reg := prometheus.NewRegistry()
	h := newHookRunner(cfg, slog.New(slog.DiscardHandler), reg)

	start := time.Now()
	h.observe("primary", 1)
	testutil.WaitFor(t, 10*time.Second, "the first run started", func() (bool, error) {
		return len(readLines(t, out)) == 1, nil
	})
	h.observe("fenced", 1)
	h.observe("stopped", 1)
	h.observe("replica", 2)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("observe blocked for %s", took)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.wait()
	want := []string{
		"role=primary previous= cluster=main node=n1 epoch=1 args=",
		"role=replica previous=primary cluster=main node=n1 epoch=2 args=",
	}
	if got := readLines(t, out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hook runs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Back to the announced role while a run is in progress: nothing more.
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	h.observe("primary", 3)
	testutil.WaitFor(t, 10*time.Second, "the third run started", func() (bool, error) {
		return len(readLines(t, out)) == 3, nil
	})
	h.observe("fenced", 3)
	h.observe("primary", 3)
	os.WriteFile(gate, nil, 0o644)
	h.wait()
	if got := readLines(t, out); len(got) != 3 {
		t.Fatalf("a role that went back to the announced one ran the hook again:\n%s", strings.Join(got, "\n"))
	}
}

// TestRoleChangeHookFailureAndTimeout: a non-zero exit is counted as
// failed; a hook past its timeout is killed with its children.
func TestRoleChangeHookFailureAndTimeout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env.log")
	script := hookScript(t, out, `[ "$PGDR_ROLE" = replica ] && exit 3; sleep 30 & sleep 30; exit 0`)
	cfg := hookConfig(t, fmt.Sprintf("{on_role_change: [%s], timeout: 300ms}", script))
	reg := prometheus.NewRegistry()
	h := newHookRunner(cfg, slog.New(slog.DiscardHandler), reg)
	h.observe("replica", 1)
	h.wait()
	if n := hookRuns(t, reg, hookFailed); n != 1 {
		t.Errorf("failed runs = %v, want 1", n)
	}
	start := time.Now()
	h.observe("primary", 2)
	h.wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the timed-out hook took %s to be killed (timeout 300ms)", took)
	}
	if n := hookRuns(t, reg, hookTimeout); n != 1 {
		t.Errorf("timeout runs = %v, want 1", n)
	}

	// A command that does not exist is counted as an error.
	cfg = hookConfig(t, "{on_role_change: [/nonexistent/hook]}")
	reg = prometheus.NewRegistry()
	h = newHookRunner(cfg, slog.New(slog.DiscardHandler), reg)
	h.observe("replica", 1)
	h.wait()
	if n := hookRuns(t, reg, hookError); n != 1 {
		t.Errorf("error runs = %v, want 1", n)
	}
}

// TestRoleChangeHookFromChecks: the daemon's health round feeds the hook
// (no PostgreSQL runs: the role is stopped) and exposes the metric.
func TestRoleChangeHookFromChecks(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env.log")
	script := hookScript(t, out, "exit 0")
	cfg := hookConfig(t, fmt.Sprintf("{on_role_change: [%s]}", script))
	d := New(cfg, nil, slog.New(slog.DiscardHandler))
	d.epoch.See(7)
	d.CheckNow(context.Background())
	d.CheckNow(context.Background())
	d.hooks.wait()
	want := "role=stopped previous= cluster=main node=n1 epoch=7 args="
	if got := readLines(t, out); len(got) != 1 || got[0] != want {
		t.Fatalf("hook runs: %q, want [%q]", got, want)
	}
	if n := hookRuns(t, d.metrics.reg, hookOK); n != 1 {
		t.Errorf("pgdr_agent_hook_runs_total{result=ok} = %v, want 1", n)
	}
}

func TestHooksConfig(t *testing.T) {
	for _, tc := range []struct{ hooks, field string }{
		{"{on_role_change: [relative/hook]}", "hooks.on_role_change[0]"},
		{"{on_role_change: ['']}", "hooks.on_role_change[0]"},
		{"{on_role_change: [/bin/true], timeout: soon}", "hooks.timeout"},
		{"{on_role_change: [/bin/true], timeout: 1ms}", "hooks.timeout"},
	} {
		pgdata := testutil.FakePGData(t, 7300000000000000124)
		_, err := config.Parse([]byte(fmt.Sprintf("cluster: c\nnode: {name: n}\npostgres: {pgdata: %s}\nrepos: [{url: 'file:///r'}]\nencryption: {disabled: true}\nhooks: %s\n", pgdata, tc.hooks)))
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("hooks: %s: error %v, want one about %s", tc.hooks, err, tc.field)
		}
	}
	cfg := hookConfig(t, "{on_role_change: [/bin/true]}")
	if cfg.Hooks.Timeout.Duration != config.DefaultHookTimeout {
		t.Errorf("default timeout %s, want %s", cfg.Hooks.Timeout.Duration, config.DefaultHookTimeout)
	}
}
