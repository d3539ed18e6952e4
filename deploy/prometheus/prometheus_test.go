package prometheus

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// runbookBase is how every runbook_url starts: the rest is a path in this
// repository, under docs/runbooks/, and an anchor of one of its headings.
const runbookBase = "https://github.com/pgdr/pgdr/blob/main/"

// The Prometheus configurations and the rule files they load.
var (
	configFiles = []string{"regional/prometheus.yml", "regional/prometheus-kubernetes.yml", "global/prometheus.yml"}
	// federatedBy: the configuration whose /federate match[] must select
	// every regional recording a global rule reads.
	globalConfig = "global/prometheus.yml"
)

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type unitTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName     string              `yaml:"job_name"`
		MetricsPath string              `yaml:"metrics_path"`
		HonorLabels bool                `yaml:"honor_labels"`
		Params      map[string][]string `yaml:"params"`
	} `yaml:"scrape_configs"`
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

func globFiles(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no file matches %s", pattern)
	}
	return files
}

// loadRules reads every rules/*.yml, by file name.
func loadRules(t *testing.T) map[string][]rule {
	t.Helper()
	out := map[string][]rule{}
	for _, f := range globFiles(t, "rules/*.yml") {
		var rf ruleFile
		readYAML(t, f, &rf)
		for _, g := range rf.Groups {
			out[f] = append(out[f], g.Rules...)
		}
	}
	return out
}

// TestPromtoolCheckConfig runs `promtool check config` on every Prometheus
// configuration, which also loads the rule files and the file_sd target
// files they name. The TLS files (absolute paths under /etc/prometheus/pgdr/)
// are placeholders in a copy of the tree. Debian's promtool is built without
// Kubernetes service discovery: for a configuration that uses it, the test
// requires that this is promtool's only complaint, then checks the rest of
// the file (relabelling, TLS, rules) with the kubernetes_sd_configs blocks
// removed, and the blocks' shape itself.
func TestPromtoolCheckConfig(t *testing.T) {
	pt := testutil.Promtool(t)
	tmp := t.TempDir()
	for _, dir := range []string{"regional", "regional/targets", "global", "rules"} {
		if err := os.MkdirAll(filepath.Join(tmp, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tlsDir := filepath.Join(tmp, "tls")
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tlsRef := regexp.MustCompile(`/etc/prometheus/pgdr/([A-Za-z0-9._-]+)`)
	for _, pattern := range []string{"regional/*.yml", "regional/targets/*.json", "global/*.yml", "rules/*.yml"} {
		for _, f := range globFiles(t, pattern) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tlsRef.FindAllStringSubmatch(string(b), -1) {
				if err := os.WriteFile(filepath.Join(tlsDir, m[1]), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			b = []byte(strings.ReplaceAll(string(b), "/etc/prometheus/pgdr/", tlsDir+"/"))
			if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, cfg := range globFiles(t, "*/prometheus*.yml") {
		if !slices.Contains(configFiles, cfg) {
			t.Errorf("%s is not in configFiles: add it so its federation and rules are checked too", cfg)
		}
	}
	for _, cfg := range configFiles {
		t.Run(cfg, func(t *testing.T) {
			path := filepath.Join(tmp, cfg)
			out, err := exec.Command(pt, "check", "config", path).CombinedOutput()
			if err == nil {
				t.Logf("promtool check config %s:\n%s", cfg, out)
				return
			}
			if !strings.Contains(string(out), "field kubernetes_sd_configs not found") {
				t.Fatalf("promtool check config %s: %v\n%s", cfg, err, out)
			}
			for _, m := range regexp.MustCompile(`field (\S+) not found`).FindAllStringSubmatch(string(out), -1) {
				if m[1] != "kubernetes_sd_configs" {
					t.Fatalf("promtool check config %s: %v\n%s", cfg, err, out)
				}
			}
			t.Logf("this promtool lacks Kubernetes service discovery (Debian's build): checking %s without its kubernetes_sd_configs blocks", cfg)
			checkKubernetesSD(t, path)
			stripped := strings.TrimSuffix(path, ".yml") + ".without-k8s-sd.yml"
			out, err = exec.Command(pt, "check", "config", stripped).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool check config %s (without kubernetes_sd_configs): %v\n%s", cfg, err, out)
			}
		})
	}
}

// checkKubernetesSD checks the kubernetes_sd_configs blocks of the file at
// path (a role promtool would accept, namespaces as a list of names) and
// writes the file without them next to it (.without-k8s-sd.yml).
func checkKubernetesSD(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	blocks := 0
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); {
				if n.Content[i].Value != "kubernetes_sd_configs" {
					i += 2
					continue
				}
				var sds []struct {
					Role       string `yaml:"role"`
					Namespaces struct {
						Names []string `yaml:"names"`
					} `yaml:"namespaces"`
				}
				if err := n.Content[i+1].Decode(&sds); err != nil {
					t.Errorf("kubernetes_sd_configs at line %d: %v", n.Content[i].Line, err)
				}
				for _, sd := range sds {
					if !slices.Contains([]string{"node", "service", "pod", "endpoints", "endpointslice", "ingress"}, sd.Role) {
						t.Errorf("kubernetes_sd_configs at line %d: role %q", n.Content[i].Line, sd.Role)
					}
					if len(sd.Namespaces.Names) == 0 {
						t.Errorf("kubernetes_sd_configs at line %d: no namespaces.names (every namespace would be watched)", n.Content[i].Line)
					}
				}
				blocks++
				n.Content = append(n.Content[:i], n.Content[i+2:]...)
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	if blocks == 0 {
		t.Fatalf("%s: promtool complained about kubernetes_sd_configs but none was found", path)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(strings.TrimSuffix(path, ".yml")+".without-k8s-sd.yml", out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPromtoolCheckRules runs `promtool check rules` on every rule file.
func TestPromtoolCheckRules(t *testing.T) {
	pt := testutil.Promtool(t)
	for _, f := range globFiles(t, "rules/*.yml") {
		out, err := exec.Command(pt, "check", "rules", f).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
}

// TestPromtoolTestRules runs the rules' unit tests (tests/*.yml).
func TestPromtoolTestRules(t *testing.T) {
	pt := testutil.Promtool(t)
	for _, f := range globFiles(t, "tests/*.yml") {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command(pt, "test", "rules", f).CombinedOutput()
			if err != nil {
				t.Errorf("promtool test rules %s: %v\n%s", f, err, out)
			}
		})
	}
}

// TestAlertsComplete: every alert has a severity, a summary, a description
// and a runbook_url into docs/runbooks/ naming a heading that exists; every
// alert fires in a unit test and is expected quiet in another; every rule
// file is loaded by a configuration and by a unit test.
func TestAlertsComplete(t *testing.T) {
	rules := loadRules(t)
	alerts := map[string]rule{}
	for f, rs := range rules {
		for _, r := range rs {
			if r.Alert == "" {
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("%s: alert %s defined twice", f, r.Alert)
			}
			alerts[r.Alert] = r
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alert rules found")
	}
	anchors := map[string]map[string]bool{}
	for name, r := range alerts {
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical (page) or warning (ticket)", name, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", name, a)
			}
		}
		u := r.Annotations["runbook_url"]
		rest, ok := strings.CutPrefix(u, runbookBase)
		if !ok {
			t.Errorf("%s: runbook_url %q does not start with %s", name, u, runbookBase)
			continue
		}
		file, anchor, _ := strings.Cut(rest, "#")
		if !strings.HasPrefix(file, "docs/runbooks/") {
			t.Errorf("%s: runbook_url %q is not under docs/runbooks/", name, u)
			continue
		}
		if anchor == "" {
			t.Errorf("%s: runbook_url %q names no heading (#anchor)", name, u)
		}
		if anchors[file] == nil {
			anchors[file] = headingAnchors(t, filepath.Join("..", "..", file))
		}
		if anchor != "" && !anchors[file][anchor] {
			t.Errorf("%s: runbook_url %q: %s has no heading with anchor #%s", name, u, file, anchor)
		}
	}

	fires, quiet := map[string]bool{}, map[string]bool{}
	loadedByTests := map[string]bool{}
	for _, f := range globFiles(t, "tests/*.yml") {
		var tf unitTestFile
		readYAML(t, f, &tf)
		for _, rf := range tf.RuleFiles {
			loadedByTests[filepath.Clean(filepath.Join("tests", rf))] = true
		}
		for _, tc := range tf.Tests {
			for _, at := range tc.AlertRuleTest {
				if _, ok := alerts[at.Alertname]; !ok {
					t.Errorf("%s (%s): alert_rule_test of unknown alert %q", f, tc.Name, at.Alertname)
				}
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					quiet[at.Alertname] = true
				}
			}
		}
	}
	for name := range alerts {
		if !fires[name] {
			t.Errorf("%s: no unit test (tests/*.yml) makes it fire", name)
		}
		if !quiet[name] {
			t.Errorf("%s: no unit test (tests/*.yml) expects it quiet", name)
		}
	}

	loadedByConfigs := map[string]bool{}
	for _, cfg := range configFiles {
		var pc promConfig
		readYAML(t, cfg, &pc)
		for _, rf := range pc.RuleFiles {
			loadedByConfigs[filepath.Clean(filepath.Join(filepath.Dir(cfg), rf))] = true
		}
	}
	for f := range rules {
		if !loadedByTests[f] {
			t.Errorf("%s is loaded by no unit test", f)
		}
		if !loadedByConfigs[f] {
			t.Errorf("%s is loaded by no Prometheus configuration", f)
		}
	}
}

// headingAnchors: the GitHub anchors of a Markdown file's headings.
func headingAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("runbook %s: %v", path, err)
		return map[string]bool{}
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var a strings.Builder
		for _, r := range h {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				a.WriteRune(r)
			case r == ' ':
				a.WriteRune('-')
			}
		}
		out[a.String()] = true
	}
	return out
}

type catalogueEntry struct{ labels map[string]bool }

// catalogue parses docs/metrics.md: the first column of every table is a
// metric name, the third its labels (every backquoted word in it).
func catalogue(t *testing.T) map[string]catalogueEntry {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tick := regexp.MustCompile("`([^`]+)`")
	out := map[string]catalogueEntry{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) < 5 {
			continue
		}
		m := tick.FindStringSubmatch(cols[1])
		if m == nil {
			continue
		}
		e := catalogueEntry{labels: map[string]bool{}}
		for _, l := range tick.FindAllStringSubmatch(cols[3], -1) {
			e.labels[l[1]] = true
		}
		out[m[1]] = e
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 50 {
		t.Fatalf("docs/metrics.md: only %d metrics parsed", len(out))
	}
	return out
}

// labelsOf: the labels a metric may carry: the catalogue's, the constant
// cluster and node of every agent series, and the target's job and instance.
func labelsOf(cat map[string]catalogueEntry, metric string) map[string]bool {
	out := map[string]bool{"job": true, "instance": true}
	for l := range cat[metric].labels {
		out[l] = true
	}
	if strings.HasPrefix(metric, "pgdr_agent_") || strings.HasPrefix(metric, "pgdr_repo_") || metric == "pg_up" {
		out["cluster"], out["node"] = true, true
	}
	return out
}

var (
	identRE    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	selectorRE = regexp.MustCompile(`\b(pgdr_[a-z0-9_]+|pg_up)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)`)
	byRE       = regexp.MustCompile(`by \(([^)]*)\) \((?:[a-z_]+\()?(pgdr_[a-z0-9_]+|pg_up)\b`)
)

// TestRulesUseCatalogue: every metric a rule reads is in docs/metrics.md,
// with labels the catalogue gives it; every recorded name is defined,
// named level:metric:operation after a catalogue metric, and the ones the
// global rules read from the regions are selected by the federation's
// match[]. The unit tests' input series use catalogue names and labels too.
func TestRulesUseCatalogue(t *testing.T) {
	cat := catalogue(t)
	rules := loadRules(t)
	recorded := map[string]string{} // name -> file
	for f, rs := range rules {
		for _, r := range rs {
			if r.Record != "" {
				recorded[r.Record] = f
			}
		}
	}
	var pc promConfig
	readYAML(t, globalConfig, &pc)
	var federate []*regexp.Regexp
	for _, sc := range pc.ScrapeConfigs {
		if sc.MetricsPath != "/federate" {
			continue
		}
		if !sc.HonorLabels {
			t.Errorf("%s: job %s federates without honor_labels: true", globalConfig, sc.JobName)
		}
		for _, m := range sc.Params["match[]"] {
			re := regexp.MustCompile(`__name__=~"([^"]+)"`).FindStringSubmatch(m)
			if re == nil {
				t.Errorf("%s: match[] %q selects no __name__ regex", globalConfig, m)
				continue
			}
			federate = append(federate, regexp.MustCompile("^(?:"+re[1]+")$"))
		}
	}
	if len(federate) == 0 {
		t.Fatalf("%s: no /federate job with match[]", globalConfig)
	}
	federated := func(name string) bool {
		return slices.ContainsFunc(federate, func(re *regexp.Regexp) bool { return re.MatchString(name) })
	}

	checkMetric := func(where, name string) {
		if _, ok := cat[name]; !ok {
			t.Errorf("%s: metric %s is not in docs/metrics.md", where, name)
		}
	}
	for name, f := range recorded {
		parts := strings.Split(name, ":")
		if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
			t.Errorf("%s: recorded name %s is not level:metric:operation", f, name)
			continue
		}
		_, isMetric := cat[parts[1]]
		_, isCounter := cat[parts[1]+"_total"]
		if !isMetric && !isCounter {
			t.Errorf("%s: recorded name %s: %s is not a catalogue metric (or a counter without _total)", f, name, parts[1])
		}
		if strings.HasPrefix(f, "rules/regional-") && !federated(name) {
			t.Errorf("%s: %s is not selected by the federation's match[] in %s", f, name, globalConfig)
		}
	}
	for f, rs := range rules {
		for _, r := range rs {
			where := f + ": " + r.Record + r.Alert
			for _, id := range identRE.FindAllString(r.Expr, -1) {
				switch {
				case strings.Contains(id, ":"):
					rf, ok := recorded[id]
					if !ok {
						t.Errorf("%s: reads %s, which no rule records", where, id)
					}
					if strings.HasPrefix(f, "rules/global-") && strings.HasPrefix(rf, "rules/regional-") && !federated(id) {
						t.Errorf("%s: reads %s, which the global Prometheus does not federate", where, id)
					}
				case strings.HasPrefix(id, "pgdr_") || id == "pg_up":
					checkMetric(where, id)
				}
			}
			for _, m := range selectorRE.FindAllStringSubmatch(r.Expr, -1) {
				allowed := labelsOf(cat, m[1])
				for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
					if !allowed[lm[1]] {
						t.Errorf("%s: %s{%s}: label %s is not in the catalogue", where, m[1], m[2], lm[1])
					}
				}
			}
			for _, m := range byRE.FindAllStringSubmatch(r.Expr, -1) {
				allowed := labelsOf(cat, m[2])
				for _, l := range strings.Split(m[1], ",") {
					if l = strings.TrimSpace(l); l != "" && !allowed[l] {
						t.Errorf("%s: by (%s) over %s: label %s is not in the catalogue", where, m[1], m[2], l)
					}
				}
			}
		}
	}

	var used []string
	for _, f := range globFiles(t, "tests/*.yml") {
		var tf unitTestFile
		readYAML(t, f, &tf)
		for _, tc := range tf.Tests {
			for _, s := range tc.InputSeries {
				name, labels, _ := strings.Cut(s.Series, "{")
				if !strings.HasPrefix(name, "pgdr_") && name != "pg_up" {
					continue
				}
				where := f + " (" + tc.Name + ")"
				checkMetric(where, name)
				allowed := labelsOf(cat, name)
				for _, lm := range matcherRE.FindAllStringSubmatch(labels, -1) {
					if !allowed[lm[1]] {
						t.Errorf("%s: input series %s: label %s is not in the catalogue", where, s.Series, lm[1])
					}
				}
				used = append(used, name)
			}
		}
	}
	sort.Strings(used)
	t.Logf("unit tests feed %d distinct catalogue metrics", len(slices.Compact(used)))
}
