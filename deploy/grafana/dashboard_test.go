package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/pkg/testutil"
)

const (
	dashboardFile = "pgdr.json"
	catalogueFile = "../../docs/metrics.md"
	rulesDir      = "../prometheus"
	dsRef         = "${datasource}"
)

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string          `json:"name"`
			Datasource json.RawMessage `json:"datasource"`
			Expr       string          `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource json.RawMessage `json:"datasource"`
}

// loadCatalogue reads docs/metrics.md and the recording rules of
// deploy/prometheus.
func loadCatalogue(t *testing.T) Catalogue {
	t.Helper()
	metrics, err := ReadCatalogue(catalogueFile)
	if err != nil {
		t.Fatal(err)
	}
	records, err := ReadRecordingRules(rulesDir)
	if err != nil {
		t.Fatal(err)
	}
	return Catalogue{Metrics: metrics, Records: records}
}

// TestDashboard checks pgdr.json: its shape, its data sources, and that
// every query selects only catalogued metrics or recorded rules.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkDashboard(b, loadCatalogue(t)) {
		t.Error(p)
	}
}

// TestDashboardPromQLSyntax has promtool parse every expression (as a
// recording rule, Grafana's variables replaced by values of their kind):
// the tokenizer finds names, not syntax errors. promtool comes from scripts/ci-deps.sh
// (Debian's prometheus package).
func TestDashboardPromQLSyntax(t *testing.T) {
	promtool := testutil.Promtool(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	values := map[string]string{"__rate_interval": "1m", "__interval": "30s", "__range": "1d"}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, e := range expressions(d) {
		x := varRef.ReplaceAllStringFunc(e.expr, func(ref string) string {
			m := varRef.FindStringSubmatch(ref)
			if v, ok := values[m[1]+m[2]]; ok {
				return v
			}
			return ".*"
		})
		rules = append(rules, rule{Record: fmt.Sprintf("pgdr_dashboard_expr_%d", i), Expr: x})
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's %d expressions: %v\n%s", len(rules), err, b)
	}
}

// TestDashboardUses names the series the dashboard exists to show: a panel
// dropped by an edit fails here.
func TestDashboardUses(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, e := range expressions(d) {
		names, err := MetricNames(e.expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			used[n] = true
		}
	}
	for _, want := range []string{
		"pgdr_agent_role", "pg_up", "pgdr_cluster_members", "pgdr_cluster_failover_candidates",
		"pgdr_agent_lag_bytes", "pgdr_agent_lag_seconds",
		"pgdr_cluster_archive_rpo_seconds", "pgdr_agent_wal_ready_segments",
		"pgdr_agent_wal_push_duration_seconds_bucket", "pgdr_agent_wal_push_failures_total",
		"pgdr_repo_last_backup_timestamp_seconds", "pgdr_backup_tier_interval_seconds", "pgdr_backup_runs_total",
		"pgdr_drill_last_success_timestamp_seconds", "pgdr_drill_duration_seconds", "pgdr_drill_runs_total",
		"pgdr_cluster_rto_seconds", "pgdr_cluster_target_seconds", "pgdr_cluster_target_breached",
		"pgdr_cluster_write_availability_ratio", "pgdr_cluster_error_budget_remaining_ratio",
		"pgdr_cluster_primary_changes_total", "pgdr_cluster_primary_change_duration_seconds",
		"pgdr_coordinator_leader", "pgdr_coordinator_raft_term", "pgdr_coordinator_raft_commit_index",
		"pgdr_coordinator_leader_changes_total", "pgdr_coordinator_report_delay_seconds_bucket",
	} {
		if !used[want] {
			t.Errorf("no query of %s reads %s", dashboardFile, want)
		}
	}
}

// TestCheckDashboardFails shows each check catching what it is there for.
func TestCheckDashboardFails(t *testing.T) {
	c := Catalogue{
		Metrics: map[string]string{"pgdr_agent_up": "gauge", "pgdr_agent_wal_push_duration_seconds": "histogram"},
		Records: map[string]bool{"cluster:pgdr_agent_up:sum": true},
	}
	ds := `{"type":"prometheus","uid":"${datasource}"}`
	vars := `"templating":{"list":[
		{"name":"datasource","type":"datasource","query":"prometheus"},
		{"name":"region","type":"query","datasource":` + ds + `,"query":{"query":"label_values(pgdr_agent_up, region)"}},
		{"name":"cluster","type":"query","datasource":` + ds + `,"query":"label_values(pgdr_agent_up{region=~\"$region\"}, cluster)"}]}`
	board := func(panels string) string {
		return `{"uid":"u","title":"t","schemaVersion":39,` + vars + `,"panels":[` + panels + `]}`
	}
	panelJSON := func(id int, expr string) string {
		e, _ := json.Marshal(expr)
		return fmt.Sprintf(`{"id":%d,"type":"timeseries","title":"p%d","datasource":%s,"gridPos":{"h":8,"w":12,"x":0,"y":0},"targets":[{"refId":"A","expr":%s}]}`, id, id, ds, e)
	}
	good := panelJSON(1, `sum(rate(pgdr_agent_wal_push_duration_seconds_bucket{cluster=~"$cluster"}[$__rate_interval]))`)
	relabel := panelJSON(3, `label_replace(pgdr_agent_up{cluster=~"${cluster:regex}"}, "host", "$1", "node", "(.*)-.*")`)
	if p := checkDashboard([]byte(board(good+`,`+panelJSON(2, `cluster:pgdr_agent_up:sum`)+`,`+relabel)), c); len(p) != 0 {
		t.Fatalf("a good dashboard fails: %q", p)
	}
	for _, tc := range []struct {
		name, json, want string
	}{
		{"not JSON", `{"uid":`, "not valid JSON"},
		{"old schema", `{"uid":"u","title":"t","schemaVersion":27,` + vars + `,"panels":[` + good + `]}`, "schemaVersion 27"},
		{"unknown metric", board(panelJSON(1, `rate(pgdr_agent_wal_push_failure_total[5m])`)), "pgdr_agent_wal_push_failure_total"},
		{"unknown metric after a label list", board(panelJSON(1, `sum by (cluster) (pgdr_agent_up) / on (cluster) group_left pgdr_agent_nope`)), "pgdr_agent_nope"},
		{"_bucket of a gauge", board(panelJSON(1, `pgdr_agent_up_bucket`)), "pgdr_agent_up_bucket"},
		{"undefined recording rule", board(panelJSON(1, `cluster:pgdr_lag:max`)), "cluster:pgdr_lag:max"},
		{"unknown metric in a variable", strings.Replace(board(good), "label_values(pgdr_agent_up, region)", "label_values(pgdr_agent_upp, region)", 1), "pgdr_agent_upp"},
		{"unterminated matcher", board(panelJSON(1, `pgdr_agent_up{cluster="a"`)), "unterminated {"},
		{"undefined variable", board(panelJSON(1, `pgdr_agent_up{node=~"$node"}`)), "$node"},
		{"duplicate id", board(good + `,` + good), "id 1 used twice"},
		{"no targets", board(`{"id":1,"type":"stat","title":"empty","datasource":` + ds + `,"gridPos":{"h":8,"w":12,"x":0,"y":0},"targets":[]}`), "no queries"},
		{"hard-coded data source", board(strings.Replace(good, "${datasource}", "P1809F7CD0C75ACF3", 1)), "P1809F7CD0C75ACF3"},
		{"hard-coded target data source", board(strings.Replace(good, `"refId":"A"`, `"refId":"A","datasource":{"type":"prometheus","uid":"abc"}`, 1)), `"abc"`},
		{"too wide", board(strings.Replace(good, `"x":0`, `"x":18`, 1)), "outside the 24-column grid"},
		{"no datasource variable", strings.Replace(board(good), `"type":"datasource"`, `"type":"custom"`, 1), "no datasource variable"},
	} {
		p := checkDashboard([]byte(tc.json), c)
		if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tc.want) }) {
			t.Errorf("%s: problems %q, want one naming %q", tc.name, p, tc.want)
		}
	}
}

// expr is one PromQL expression of a dashboard and where it is.
type expr struct{ where, expr string }

// expressions returns every PromQL expression of a dashboard: the panels'
// queries, the query variables' (the metric selector of label_values, or
// the expression of query_result) and the annotations'.
func expressions(d dashboard) []expr {
	var out []expr
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, expr{fmt.Sprintf("panel %d %q query %s", p.ID, p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := variableQuery(v)
		switch {
		case strings.HasPrefix(q, "label_values(") && strings.HasSuffix(q, ")"):
			args := q[len("label_values(") : len(q)-1]
			if i := strings.LastIndexByte(args, ','); i >= 0 {
				out = append(out, expr{"variable " + v.Name, args[:i]})
			}
		case strings.HasPrefix(q, "query_result(") && strings.HasSuffix(q, ")"):
			out = append(out, expr{"variable " + v.Name, q[len("query_result(") : len(q)-1]})
		default:
			out = append(out, expr{"variable " + v.Name, q})
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out = append(out, expr{"annotation " + a.Name, a.Expr})
		}
	}
	return out
}

// variableQuery returns a query variable's query: a string, or the query
// field of the object newer Grafana writes.
func variableQuery(v variable) string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return strings.TrimSpace(s)
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return strings.TrimSpace(o.Query)
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// varRef matches a Grafana variable reference, $name or ${name} or
// ${name:format}; $1 (a label_replace group) is not one.
var varRef = regexp.MustCompile(`\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))`)

// checkDashboard returns what is wrong with a dashboard's JSON, each problem
// naming where it is.
func checkDashboard(b []byte, c Catalogue) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return []string{fmt.Sprintf("dashboard is not valid JSON of a dashboard: %v", err)}
	}
	if d.UID == "" || d.Title == "" {
		bad("dashboard has no uid or title")
	}
	if d.SchemaVersion < 38 || d.SchemaVersion > 41 {
		bad("schemaVersion %d is not one of Grafana 10 or 11 (38-41)", d.SchemaVersion)
	}

	// Data sources: one variable of type datasource for Prometheus, and
	// every "datasource" anywhere in the JSON refers to it.
	vars := map[string]bool{}
	hasDS := false
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "datasource" && v.Name == "datasource" && string(v.Query) == `"prometheus"` {
			hasDS = true
		}
	}
	if !hasDS {
		bad(`no datasource variable (name "datasource", type datasource, query "prometheus")`)
	}
	for _, name := range []string{"region", "cluster"} {
		i := slices.IndexFunc(d.Templating.List, func(v variable) bool { return v.Name == name })
		if i < 0 || d.Templating.List[i].Type != "query" || !strings.HasPrefix(variableQuery(d.Templating.List[i]), "label_values(") {
			bad("no %s variable of type query from label_values", name)
		}
	}
	var tree any
	_ = json.Unmarshal(b, &tree)
	walkDatasources(tree, "", func(path string, v any) {
		if !isDSRef(v) {
			raw, _ := json.Marshal(v)
			bad("%s: datasource %s is not the variable %s", path, raw, dsRef)
		}
	})

	// Panels.
	ids := map[int]bool{}
	for _, p := range allPanels(d.Panels) {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 || ids[p.ID] {
			bad("%s: id %d used twice or not positive", where, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			bad("%s: gridPos %+v outside the 24-column grid", where, g)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Datasource) == 0 {
			bad("%s: no datasource", where)
		}
		if len(p.Targets) == 0 {
			bad("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || refs[tg.RefID] {
				bad("%s: query %q empty, without a refId or with a refId used twice", where, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}

	// Queries: known series, defined variables.
	for _, e := range expressions(d) {
		unknown, err := c.Unknown(e.expr)
		if err != nil {
			bad("%s: %v", e.where, err)
		}
		for _, n := range unknown {
			bad("%s: %s is not in docs/metrics.md nor a recording rule of deploy/prometheus", e.where, n)
		}
		for _, m := range varRef.FindAllStringSubmatch(e.expr, -1) {
			name := m[1] + m[2]
			if !vars[name] && !strings.HasPrefix(name, "__") {
				bad("%s: variable $%s is not defined", e.where, name)
			}
		}
	}
	return probs
}

// walkDatasources calls f with every value of a "datasource" key in a
// decoded JSON tree.
func walkDatasources(v any, path string, f func(path string, v any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if k == "datasource" {
				f(path+"/"+k, x)
				continue
			}
			walkDatasources(x, path+"/"+k, f)
		}
	case []any:
		for i, x := range v {
			walkDatasources(x, fmt.Sprintf("%s/%d", path, i), f)
		}
	}
}

func isDSRef(v any) bool {
	switch v := v.(type) {
	case string:
		return v == dsRef || v == "$datasource"
	case map[string]any:
		uid, _ := v["uid"].(string)
		typ, _ := v["type"].(string)
		return (uid == dsRef || uid == "$datasource") && (typ == "" || typ == "prometheus")
	}
	return false
}

// TestProvisioning checks the provisioning example: a file provider whose
// path is where the README copies pgdr.json, and Prometheus data sources.
func TestProvisioning(t *testing.T) {
	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join("provisioning", "dashboards", "pgdr.yaml"), &dash)
	if dash.APIVersion != 1 || len(dash.Providers) != 1 || dash.Providers[0].Type != "file" || dash.Providers[0].Options.Path == "" {
		t.Errorf("dashboards provisioning: want apiVersion 1 and one file provider with a path, got %+v", dash)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(dash.Providers) == 1 && !strings.Contains(string(readme), dash.Providers[0].Options.Path) {
		t.Errorf("README.md does not say to put pgdr.json in the provider's path %s", dash.Providers[0].Options.Path)
	}
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name string `yaml:"name"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join("provisioning", "datasources", "prometheus.yaml"), &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) == 0 {
		t.Fatalf("datasources provisioning: want apiVersion 1 and data sources, got %+v", ds)
	}
	for _, s := range ds.Datasources {
		if s.Type != "prometheus" || s.URL == "" || s.Name == "" {
			t.Errorf("data source %+v: want a named prometheus data source with a url", s)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
