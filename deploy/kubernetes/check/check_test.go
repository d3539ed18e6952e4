package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	coordconfig "github.com/pgdr/pgdr/coordinator/config"
	agentconfig "github.com/pgdr/pgdr/pkg/config"
)

const (
	chartDir    = "../pgdr"
	renderedDir = "../rendered"
)

type rendered struct {
	vs     ValueSet
	values map[string]any
	stream string
	objs   []Object
}

// renderAll renders every value set once per test binary.
func renderAll(t *testing.T) []rendered {
	t.Helper()
	sets, err := ValueSets(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) < 2 {
		t.Fatalf("want at least two value sets in %s/ci, have %d", chartDir, len(sets))
	}
	var out []rendered
	for _, vs := range sets {
		vals, err := ReadValues(vs.ValuesFile)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := Render(chartDir, vals)
		if err != nil {
			t.Fatalf("%s: helm template: %v", vs.Name, err)
		}
		objs, err := Decode(stream)
		if err != nil {
			t.Fatalf("%s: %v", vs.Name, err)
		}
		out = append(out, rendered{vs: vs, values: vals, stream: stream, objs: objs})
	}
	return out
}

func TestLintStrict(t *testing.T) {
	sets, err := ValueSets(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, vs := range sets {
		vals, err := ReadValues(vs.ValuesFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := Lint(chartDir, vals); err != nil {
			t.Errorf("%s:\n%v", vs.Name, err)
		}
	}
}

// TestValueSets: the two shipped value sets render, decode strictly and
// pass the policy, and cover 3 and 5 coordinators and both agent modes.
func TestValueSets(t *testing.T) {
	voters := map[int]bool{}
	modes := map[string]bool{}
	for _, r := range renderAll(t) {
		if err := Policy(r.objs); err != nil {
			t.Errorf("%s: policy:\n%v", r.vs.Name, err)
		}
		for _, o := range r.objs {
			if w := workloads([]Object{o}); len(w) == 1 {
				switch w[0].pod.Labels[ComponentLabel] {
				case "coordinator":
					voters[w[0].replicas] = true
				default:
					modes[o.Kind] = true
				}
			}
		}
	}
	if !voters[3] || !voters[5] || !modes["StatefulSet"] || !modes["DaemonSet"] {
		t.Errorf("the value sets cover coordinators %v and PostgreSQL workloads %v: want 3 and 5, StatefulSet and DaemonSet", voters, modes)
	}
}

// TestRenderedUpToDate: deploy/kubernetes/rendered/ is what the chart
// renders now (regenerate with deploy/kubernetes/render.sh).
func TestRenderedUpToDate(t *testing.T) {
	for _, r := range renderAll(t) {
		path := r.vs.RenderedFile(renderedDir)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run deploy/kubernetes/render.sh)", r.vs.Name, err)
			continue
		}
		if string(got) != RenderedHeader(r.vs)+r.stream {
			t.Errorf("%s is stale: run deploy/kubernetes/render.sh and commit the result", path)
		}
	}
	files, _ := filepath.Glob(filepath.Join(renderedDir, "*.yaml"))
	sets, _ := ValueSets(chartDir)
	if len(files) != len(sets) {
		t.Errorf("%s holds %d files for %d value sets: remove the stale ones", renderedDir, len(files), len(sets))
	}
}

// TestGeneratedConfigsParse: every configuration file the chart writes
// passes pgdr's own parsers (unknown keys are errors there too).
func TestGeneratedConfigsParse(t *testing.T) {
	for _, r := range renderAll(t) {
		n := 0
		for _, cm := range byKind[*corev1.ConfigMap](r.objs) {
			for key, text := range cm.Data {
				n++
				var err error
				switch cm.Labels[ComponentLabel] {
				case "coordinator":
					_, err = coordconfig.Parse([]byte(text))
				case "postgres":
					_, err = agentconfig.Parse([]byte(text))
				default:
					t.Errorf("%s: ConfigMap %s: unknown component %q", r.vs.Name, cm.Name, cm.Labels[ComponentLabel])
					continue
				}
				if err != nil {
					t.Errorf("%s: ConfigMap %s key %s: %v", r.vs.Name, cm.Name, key, err)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no configuration files rendered", r.vs.Name)
		}
	}
}

// set sets a dotted key in a copy of vals (a nil value deletes it).
func set(t *testing.T, vals map[string]any, key string, value any) map[string]any {
	t.Helper()
	b, err := yaml.Marshal(vals)
	if err != nil {
		t.Fatal(err)
	}
	var cp map[string]any
	if err := yaml.Unmarshal(b, &cp); err != nil {
		t.Fatal(err)
	}
	m := cp
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	if value == nil {
		delete(m, parts[len(parts)-1])
	} else {
		m[parts[len(parts)-1]] = value
	}
	return cp
}

// TestLintRefusesUnknownValues: helm lint --strict checks the values
// against the chart's schema too.
func TestLintRefusesUnknownValues(t *testing.T) {
	vals, err := ReadValues(filepath.Join(chartDir, "ci", "three-coordinators-pod-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := "additional properties 'replica' not allowed"
	if err := Lint(chartDir, set(t, vals, "coordinator.replica", 3)); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("lint: %v; want an error containing %q", err, want)
	}
}

// TestRequiredValues: a missing or wrong required value fails rendering
// (and so `helm install` and `helm template`) with a message naming it.
// `helm lint` runs templates in its lint mode, where `fail` only logs, so
// these are checked by rendering.
func TestRequiredValues(t *testing.T) {
	pod, err := ReadValues(filepath.Join(chartDir, "ci", "three-coordinators-pod-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := ReadValues(filepath.Join(chartDir, "ci", "five-coordinators-daemonset-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		base  map[string]any
		key   string
		value any
		want  string
	}{
		{pod, "coordinator.replicas", 4, "coordinator.replicas: 4: want 3 or 5"},
		{pod, "coordinator.replicas", 1, "coordinator.replicas: 1: want 3 or 5"},
		{pod, "coordinator.replicas", 7, "coordinator.replicas: 7: want 3 or 5"},
		{pod, "coordinator.regions", nil, "coordinator.regions is required"},
		{pod, "coordinator.tls.secretName", nil, "coordinator.tls.secretName is required"},
		{pod, "postgres.cluster", nil, "postgres.cluster is required"},
		{pod, "postgres.agentConfig.repos", nil, "postgres.agentConfig.repos is required"},
		{pod, "postgres.tls.secretName", nil, "postgres.tls.secretName (or postgres.tokens.secretName"},
		{pod, "postgres.pod.regions", nil, "postgres.pod.regions is required"},
		{pod, "postgres.pod.authSecretName", nil, "postgres.pod.authSecretName is required"},
		{pod, "postgres.pod.replicas", 1, "postgres.pod.replicas: want at least 2"},
		{pod, "postgres.mode", "sidecar", `at '/postgres/mode': value must be one of 'pod', 'daemonset'`},
		// values.schema.json: a misspelt key or a wrong type is an error,
		// not a value silently ignored.
		{pod, "coordinator.replica", 3, "at '/coordinator': additional properties 'replica' not allowed"},
		{pod, "postgres.agentconfig", map[string]any{}, "at '/postgres': additional properties 'agentconfig' not allowed"},
		{pod, "coordinator.replicas", "3", "at '/coordinator/replicas': got string, want integer"},
		{pod, "coordinator.enabled", false, "postgres.coordinatorAddresses is required"},
		{ds, "postgres.daemonset.nodes", nil, "postgres.daemonset.nodes is required"},
		{ds, "postgres.daemonset.runAsUser", nil, "postgres.daemonset.runAsUser and runAsGroup are required"},
		{ds, "postgres.daemonset.runAsUser", 0, "0 (root) is refused"},
		{ds, "postgres.tokens.caSecretName", nil, "postgres.tls.secretName (or postgres.tokens.secretName"},
	} {
		t.Run(tc.key+"="+strings.ReplaceAll(yamlString(tc.value), "/", "_"), func(t *testing.T) {
			_, err := Render(chartDir, set(t, tc.base, tc.key, tc.value))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("render: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func yamlString(v any) string {
	if v == nil {
		return "unset"
	}
	b, _ := yaml.Marshal(v)
	return strings.TrimSpace(string(b))
}
