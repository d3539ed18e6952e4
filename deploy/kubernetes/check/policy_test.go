package check

import (
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestDecodeIsStrict(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  replica: 3\n", `unknown field "replica"`},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n    - port: web\n", "cannot unmarshal"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, name: y}\n", `key "name" already set`},
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", `unexpected apiVersion "v1" kind "Pod"`},
	} {
		if _, err := Decode("---\n# Source: t.yaml\n" + tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q): %v; want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func find[T any](t *testing.T, objs []Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.Value.(T); ok && o.Name == name {
			return v
		}
	}
	t.Fatalf("no %T named %s", *new(T), name)
	return *new(T)
}

// TestPolicyCatches: each rule of Policy fails a rendered value set broken
// in the way the rule forbids.
func TestPolicyCatches(t *testing.T) {
	streams := map[string]string{}
	for _, name := range []string{"three-coordinators-pod", "five-coordinators-daemonset"} {
		vals, err := ReadValues(filepath.Join(chartDir, "ci", name+"-values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if streams[name], err = Render(chartDir, vals); err != nil {
			t.Fatal(err)
		}
	}
	coord := func(objs []Object) *corev1.Container {
		return &find[*appsv1.StatefulSet](t, objs, "pgdr-coordinator").Spec.Template.Spec.Containers[0]
	}
	pg := func(objs []Object) *corev1.Container {
		return &find[*appsv1.StatefulSet](t, objs, "pgdr-postgres").Spec.Template.Spec.Containers[0]
	}
	agent := func(objs []Object) *corev1.PodSpec {
		return &find[*appsv1.DaemonSet](t, objs, "pgdr-agent").Spec.Template.Spec
	}
	yes, no := true, false
	for _, tc := range []struct {
		name, set string
		breakIt   func([]Object) []Object
		want      string
	}{
		{"no liveness probe", "three-coordinators-pod", func(o []Object) []Object { coord(o).LivenessProbe = nil; return o }, "container coordinator: no livenessProbe"},
		{"no readiness probe", "five-coordinators-daemonset", func(o []Object) []Object { agent(o).Containers[0].ReadinessProbe = nil; return o }, "container agent: no readinessProbe"},
		{"root", "three-coordinators-pod", func(o []Object) []Object { coord(o).SecurityContext.RunAsNonRoot = &no; return o }, "runAsNonRoot is not true"},
		{"privileged", "five-coordinators-daemonset", func(o []Object) []Object { agent(o).Containers[0].SecurityContext.Privileged = &yes; return o }, "container agent: privileged"},
		{"escalation", "three-coordinators-pod", func(o []Object) []Object { pg(o).SecurityContext.AllowPrivilegeEscalation = nil; return o }, "allowPrivilegeEscalation must be false"},
		{"capability added", "three-coordinators-pod", func(o []Object) []Object {
			pg(o).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
			return o
		}, "capabilities.add [NET_ADMIN]"},
		{"no requests", "three-coordinators-pod", func(o []Object) []Object { coord(o).Resources.Requests = nil; return o }, "resources.requests.cpu is not set"},
		{"budget below quorum", "five-coordinators-daemonset", func(o []Object) []Object {
			m := intstr.FromInt32(2)
			find[*policyv1.PodDisruptionBudget](t, o, "pgdr-coordinator").Spec.MinAvailable = &m
			return o
		}, "minAvailable 2 with 5 voters: want at least the quorum 3"},
		{"budget blocks every drain", "three-coordinators-pod", func(o []Object) []Object {
			m := intstr.FromInt32(3)
			find[*policyv1.PodDisruptionBudget](t, o, "pgdr-coordinator").Spec.MinAvailable = &m
			return o
		}, "minAvailable 3 with 3 voters"},
		{"even voters", "three-coordinators-pod", func(o []Object) []Object {
			n := int32(4)
			find[*appsv1.StatefulSet](t, o, "pgdr-coordinator").Spec.Replicas = &n
			return o
		}, "4 replicas: want 3 or 5 voters"},
		{"no zone spread", "three-coordinators-pod", func(o []Object) []Object {
			s := find[*appsv1.StatefulSet](t, o, "pgdr-coordinator")
			s.Spec.Template.Spec.TopologySpreadConstraints = s.Spec.Template.Spec.TopologySpreadConstraints[1:]
			return o
		}, "no topologySpreadConstraint over zones"},
		{"primary by /ready", "three-coordinators-pod", func(o []Object) []Object { pg(o).ReadinessProbe.HTTPGet.Path = "/ready"; return o }, `must be the agent's /primary`},
		{"slow primary switch", "five-coordinators-daemonset", func(o []Object) []Object {
			agent(o).Containers[0].ReadinessProbe.PeriodSeconds = 5
			return o
		}, "readinessProbe period 5s"},
		{"liveness fights fencing", "three-coordinators-pod", func(o []Object) []Object { pg(o).LivenessProbe.HTTPGet.Path = "/health"; return o }, "a restart would fight fencing"},
		{"config file missing", "three-coordinators-pod", func(o []Object) []Object {
			delete(find[*corev1.ConfigMap](t, o, "pgdr-coordinator").Data, "pgdr-coordinator-2.yaml")
			return o
		}, "has no pgdr-coordinator-2.yaml"},
		{"daemonset node without config", "five-coordinators-daemonset", func(o []Object) []Object {
			delete(find[*corev1.ConfigMap](t, o, "pgdr-postgres").Data, "pg-node-b.yaml")
			return o
		}, "has no pg-node-b.yaml"},
		{"hostPath in a StatefulSet", "three-coordinators-pod", func(o []Object) []Object {
			s := &find[*appsv1.StatefulSet](t, o, "pgdr-postgres").Spec.Template.Spec
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
			return o
		}, "hostPath only in the DaemonSet"},
		{"RBAC", "three-coordinators-pod", func(o []Object) []Object {
			return append(o, Object{Kind: "Role", Name: "pgdr"})
		}, "needs no RBAC"},
		{"service selects nothing", "three-coordinators-pod", func(o []Object) []Object {
			find[*corev1.Service](t, o, "pgdr-primary").Spec.Selector["app.kubernetes.io/component"] = "nope"
			return o
		}, "0 primary Services select its pods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Decode(streams[tc.set])
			if err != nil {
				t.Fatal(err)
			}
			if err := Policy(objs); err != nil {
				t.Fatalf("unbroken: %v", err)
			}
			if err := Policy(tc.breakIt(objs)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Policy: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}
