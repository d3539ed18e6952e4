package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgdr/pgdr/pkg/config"
	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestRoleChangeHookFromChecks: the daemon's health round feeds the hook
// (no PostgreSQL runs: the role is stopped) and exposes the metric.
// The hook itself is tested in agent/hooks.
func TestRoleChangeHookFromChecks(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env.log")
	script := filepath.Join(t.TempDir(), "hook.sh")
	body := fmt.Sprintf(`#!/bin/sh
printf 'role=%%s previous=%%s cluster=%%s node=%%s epoch=%%s args=%%s\n' "$PGDR_ROLE" "$PGDR_PREVIOUS_ROLE" "$PGDR_CLUSTER" "$PGDR_NODE" "$PGDR_EPOCH" "$*" >>%s
exit 0
`, out)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	pgdata := testutil.FakePGData(t, 7300000000000000123)
	cfg, err := config.Parse([]byte(fmt.Sprintf(
		"cluster: main\nnode: {name: n1}\npostgres: {pgdata: %s, dsn: 'host=127.0.0.1 port=1 connect_timeout=1'}\nrepos: [{url: 'file://%s'}]\nencryption: {disabled: true}\nhealth: {listen: ''}\nhooks: {on_role_change: [%s]}\n",
		pgdata, t.TempDir(), script)))
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, nil, slog.New(slog.DiscardHandler))
	d.epoch.See(7)
	d.monitor.CheckNow(context.Background())
	d.monitor.CheckNow(context.Background())
	d.hooks.Wait()
	want := "role=stopped previous= cluster=main node=n1 epoch=7 args="
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimRight(string(b), "\n"), "\n"); len(got) != 1 || got[0] != want {
		t.Fatalf("hook runs: %q, want [%q]", got, want)
	}
	if n := hookRunsOK(t, d); n != 1 {
		t.Errorf("pgdr_agent_hook_runs_total{result=ok} = %v, want 1", n)
	}
}

// hookRunsOK reads pgdr_agent_hook_runs_total{result="ok"} from the
// daemon's registry.
func hookRunsOK(t *testing.T, d *Daemon) float64 {
	t.Helper()
	mfs, err := d.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pgdr_agent_hook_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "ok" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal(`no pgdr_agent_hook_runs_total{result="ok"}`)
	return 0
}
