package grafana

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// TestDashboardJoins evaluates the dashboard's queries that join two
// series (age against an interval, a measurement against its target, a
// burn rate) with promtool's rule unit tests on series shaped as the
// processes serve them: agent series from two nodes in two regions, leader
// series from an old and a new leader during a handover (both carry the
// same replicated values). A join that matches many-to-many or drops a
// label fails here, not on an on-call screen. promtool comes from scripts/ci-deps.sh.
func TestDashboardJoins(t *testing.T) {
	promtool := testutil.Promtool(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	query := func(title, ref string) string {
		for _, p := range allPanels(d.Panels) {
			for _, tg := range p.Targets {
				if p.Title == title && tg.RefID == ref {
					return varRef.ReplaceAllStringFunc(tg.Expr, func(s string) string {
						switch m := varRef.FindStringSubmatch(s); m[1] + m[2] {
						case "__rate_interval":
							return "5m"
						case "__range":
							return "1h"
						}
						return ".*"
					})
				}
			}
		}
		t.Fatalf("no query %s of a panel %q in %s", ref, title, dashboardFile)
		return ""
	}
	type series struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	}
	// Evaluated at 2h: time() is 7200. Constant series run for 3 h.
	const flat = "x180"
	var in []series
	agent := func(name, labels, value string) {
		for _, n := range []string{`node="pg-a1", region="r1"`, `node="pg-b1", region="r2"`} {
			in = append(in, series{name + `{cluster="main", ` + n + labels + `}`, value + flat})
		}
	}
	leader := func(name, labels, values string) {
		for _, c := range []string{`instance="c1:7000", region="r1"`, `instance="c2:7000", region="r2"`} {
			in = append(in, series{name + `{cluster="main", ` + c + labels + `}`, values})
		}
	}
	agent("pgdr_repo_last_backup_timestamp_seconds", `, repository="s3", tier="daily", type="full"`, "6900")
	agent("pgdr_repo_last_backup_timestamp_seconds", `, repository="s3", tier="hourly", type="incr"`, "6600")
	agent("pgdr_repo_last_backup_timestamp_seconds", `, repository="gcs", tier="daily", type="full"`, "6000")
	agent("pgdr_repo_last_backup_timestamp_seconds", `, repository="s3", tier="manual", type="full"`, "7100")
	agent("pgdr_repo_backups", `, repository="s3", tier="daily"`, "7")
	leader("pgdr_backup_tier_interval_seconds", `, tier="daily"`, "1200"+flat)
	leader("pgdr_backup_tier_interval_seconds", `, tier="hourly"`, "300"+flat)
	leader("pgdr_cluster_target_seconds", `, target="rpo"`, "60"+flat)
	leader("pgdr_cluster_target_seconds", `, target="rto"`, "900"+flat)
	leader("pgdr_cluster_target_seconds", `, target="failover"`, "300"+flat)
	leader("pgdr_cluster_archive_rpo_seconds", `, repository="s3"`, "30"+flat)
	leader("pgdr_cluster_archive_rpo_seconds", `, repository="gcs"`, "90"+flat)
	leader("pgdr_cluster_failover_rpo_seconds", ``, "6"+flat)
	leader("pgdr_cluster_rto_seconds", `, source="drill"`, "450"+flat)
	leader("pgdr_cluster_rto_seconds", `, source="failover"`, "150"+flat)
	leader("pgdr_cluster_rto_seconds", `, source="switchover"`, "30"+flat)
	leader("pgdr_drill_last_success_timestamp_seconds", ``, "6600"+flat)
	leader("pgdr_drill_interval_seconds", ``, "1200"+flat)
	leader("pgdr_cluster_write_availability_target_ratio", ``, "0.75"+flat)
	leader("pgdr_cluster_write_seconds_total", `, result="good"`, "0+45x180")
	leader("pgdr_cluster_write_seconds_total", `, result="bad"`, "0+15x180")

	type sample struct {
		Labels string  `yaml:"labels"`
		Value  float64 `yaml:"value"`
	}
	type exprTest struct {
		Expr     string   `yaml:"expr"`
		EvalTime string   `yaml:"eval_time"`
		Samples  []sample `yaml:"exp_samples"`
	}
	const backups = "Backups per tier and repository"
	repoTier := func(repo, tier string) string {
		return `{cluster="main", repository="` + repo + `", tier="` + tier + `"}`
	}
	var tests []exprTest
	add := func(expr string, samples ...sample) {
		tests = append(tests, exprTest{Expr: expr, EvalTime: "2h", Samples: samples})
	}
	add(query(backups, "A"), sample{repoTier("s3", "daily"), 300}, sample{repoTier("s3", "hourly"), 600},
		sample{repoTier("gcs", "daily"), 1200}, sample{repoTier("s3", "manual"), 100})
	add(query(backups, "B"), sample{repoTier("s3", "daily"), 1200}, sample{repoTier("s3", "hourly"), 300},
		sample{repoTier("gcs", "daily"), 1200})
	add(query(backups, "C"), sample{repoTier("s3", "daily"), 0.25}, sample{repoTier("s3", "hourly"), 2},
		sample{repoTier("gcs", "daily"), 1})
	add(query(backups, "D"), sample{repoTier("s3", "daily"), 7})
	add(query("Backup age / tier interval", "A"),
		sample{`{cluster="main", tier="daily"}`, 0.25}, sample{`{cluster="main", tier="hourly"}`, 2})
	add(query("Archive RPO / target", "A"),
		sample{`{cluster="main", repository="s3"}`, 0.5}, sample{`{cluster="main", repository="gcs"}`, 1.5})
	add(query("RTO / target", "A"), sample{`{cluster="main", source="drill"}`, 0.5})
	add(query("RTO / target", "B"), sample{`{cluster="main", source="failover"}`, 0.5}, sample{`{cluster="main", source="switchover"}`, 0.1})
	add(query("RPO / target", "A"), sample{`{cluster="main"}`, 1.5})
	add(query("RPO / target", "B"), sample{`{cluster="main"}`, 0.1})
	add(query("Last drill age / drill interval", "A"), sample{`{cluster="main"}`, 0.5})
	// A quarter of the seconds bad against a 75% target: the budget burns
	// at 1 (rounded: rates over a window longer than the data extrapolate).
	for _, ref := range []string{"A", "B", "C"} {
		add("round("+query("Burn rate", ref)+", 0.001)", sample{`{cluster="main"}`, 1})
	}

	dir := t.TempDir()
	rules := filepath.Join(dir, "empty-rules.yml")
	if err := os.WriteFile(rules, []byte("groups: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(map[string]any{
		"rule_files":          []string{rules},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":         "1m",
			"input_series":     in,
			"promql_expr_test": tests,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dashboard-test.yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(promtool, "test", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, strings.TrimSpace(string(b)))
	}
}
