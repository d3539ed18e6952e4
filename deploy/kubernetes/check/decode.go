package check

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// Object is one rendered document decoded into its k8s.io/api type.
type Object struct {
	Source string // the template it came from (its "# Source:" line)
	Kind   string
	Name   string
	Value  any // *appsv1.StatefulSet, *corev1.Service, ...
}

// newTyped returns an empty value of the k8s.io/api type of apiVersion and
// kind, or an error for a kind the chart is not expected to render.
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "rbac.authorization.k8s.io/v1 Role":
		return &rbacv1.Role{}, nil
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		return &rbacv1.RoleBinding{}, nil
	}
	return nil, fmt.Errorf("unexpected apiVersion %q kind %q (add it to check.newTyped with its k8s.io/api type)", apiVersion, kind)
}

// Decode splits a rendered stream into its documents and decodes each one
// strictly into its k8s.io/api type: an unknown or duplicated field, or a
// value of the wrong type, is an error naming the document.
func Decode(stream string) ([]Object, error) {
	var objs []Object
	for i, doc := range splitDocuments(stream) {
		source := ""
		body := []string{}
		for _, line := range strings.Split(doc, "\n") {
			if s, ok := strings.CutPrefix(line, "# Source: "); ok && source == "" {
				source = s
			}
			body = append(body, line)
		}
		text := strings.Join(body, "\n")
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(text), &head); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, source, err)
		}
		if head.APIVersion == "" && head.Kind == "" {
			if strings.TrimSpace(stripComments(text)) == "" {
				continue // a template that rendered nothing
			}
			return nil, fmt.Errorf("document %d (%s): no apiVersion and kind", i, source)
		}
		v, err := newTyped(head.APIVersion, head.Kind)
		if err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, source, err)
		}
		if err := yaml.UnmarshalStrict([]byte(text), v); err != nil {
			return nil, fmt.Errorf("%s %s (%s): strict decoding: %w", head.Kind, head.Metadata.Name, source, err)
		}
		objs = append(objs, Object{Source: source, Kind: head.Kind, Name: head.Metadata.Name, Value: v})
	}
	return objs, nil
}

func splitDocuments(stream string) []string {
	var docs []string
	var cur []string
	for _, line := range strings.Split(stream, "\n") {
		if strings.TrimRight(line, " ") == "---" {
			docs = append(docs, strings.Join(cur, "\n"))
			cur = nil
			continue
		}
		cur = append(cur, line)
	}
	return append(docs, strings.Join(cur, "\n"))
}

func stripComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
