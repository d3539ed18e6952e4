package check

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ComponentLabel names a workload's part: coordinator, postgres or agent.
const ComponentLabel = "app.kubernetes.io/component"

// workload is a StatefulSet or DaemonSet reduced to what the policy reads.
type workload struct {
	kind, name string
	replicas   int // 0 for a DaemonSet
	pod        *corev1.PodTemplateSpec
	sts        *appsv1.StatefulSet
}

func (w workload) String() string { return w.kind + " " + w.name }

func workloads(objs []Object) []workload {
	var ws []workload
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *appsv1.StatefulSet:
			n := 1
			if v.Spec.Replicas != nil {
				n = int(*v.Spec.Replicas)
			}
			ws = append(ws, workload{kind: o.Kind, name: o.Name, replicas: n, pod: &v.Spec.Template, sts: v})
		case *appsv1.DaemonSet:
			ws = append(ws, workload{kind: o.Kind, name: o.Name, pod: &v.Spec.Template})
		}
	}
	return ws
}

func byKind[T any](objs []Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Quorum is the number of voters that must stay up among n.
func Quorum(n int) int { return n/2 + 1 }

// Policy checks pgdr's deployment rules on one rendered value set and
// returns every violation, each naming the object and the field.
func Policy(objs []Object) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	ws := workloads(objs)
	if len(ws) == 0 {
		bad("no StatefulSet or DaemonSet rendered")
	}
	services := byKind[*corev1.Service](objs)
	pdbs := byKind[*policyv1.PodDisruptionBudget](objs)
	configMaps := map[string]*corev1.ConfigMap{}
	for _, cm := range byKind[*corev1.ConfigMap](objs) {
		configMaps[cm.Name] = cm
	}
	accounts := map[string]bool{}
	for _, sa := range byKind[*corev1.ServiceAccount](objs) {
		accounts[sa.Name] = true
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			bad("ServiceAccount %s: automountServiceAccountToken must be false (pgdr never calls the Kubernetes API)", sa.Name)
		}
	}
	for _, o := range objs {
		switch o.Kind {
		case "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			bad("%s %s: pgdr never calls the Kubernetes API and needs no RBAC", o.Kind, o.Name)
		}
	}

	for _, w := range ws {
		errs = append(errs, podPolicy(w)...)
		spec := &w.pod.Spec
		if spec.ServiceAccountName == "" || !accounts[spec.ServiceAccountName] {
			bad("%s: serviceAccountName %q is not a rendered ServiceAccount", w, spec.ServiceAccountName)
		}
		for _, v := range spec.Volumes {
			if v.ConfigMap != nil && configMaps[v.ConfigMap.Name] == nil {
				bad("%s: volume %s names ConfigMap %s, which is not rendered", w, v.Name, v.ConfigMap.Name)
			}
			if v.HostPath != nil && w.kind != "DaemonSet" {
				bad("%s: volume %s: hostPath only in the DaemonSet for PostgreSQL on hosts", w, v.Name)
			}
		}
		if (spec.HostNetwork || spec.HostPID) && w.kind != "DaemonSet" {
			bad("%s: hostNetwork/hostPID only in the DaemonSet for PostgreSQL on hosts", w)
		}
		switch w.pod.Labels[ComponentLabel] {
		case "coordinator":
			errs = append(errs, coordinatorPolicy(w, services, pdbs, configMaps)...)
		case "postgres", "agent":
			errs = append(errs, postgresPolicy(w, services, configMaps)...)
		default:
			bad("%s: pod label %s=%q: want coordinator, postgres or agent", w, ComponentLabel, w.pod.Labels[ComponentLabel])
		}
	}
	for _, s := range services {
		if len(s.Spec.Selector) == 0 {
			bad("Service %s: no selector", s.Name)
			continue
		}
		var matched []workload
		for _, w := range ws {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			bad("Service %s: selector %v matches no workload's pods", s.Name, s.Spec.Selector)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				continue
			}
			for _, w := range matched {
				if !hasNamedPort(w.pod.Spec.Containers, p.TargetPort.StrVal) {
					bad("Service %s: port %s targets %q, which %s's containers do not declare", s.Name, p.Name, p.TargetPort.StrVal, w)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func hasNamedPort(cs []corev1.Container, name string) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// podPolicy: every container non-root with nothing to escalate to, with
// resource requests, and every long-running container with liveness and
// readiness probes on a port it declares.
func podPolicy(w workload) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	spec := &w.pod.Spec
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		bad("%s: pod securityContext.runAsUser is 0 (root)", w)
	}
	type ctr struct {
		c    corev1.Container
		init bool
	}
	var all []ctr
	for _, c := range spec.InitContainers {
		all = append(all, ctr{c, true})
	}
	for _, c := range spec.Containers {
		all = append(all, ctr{c, false})
	}
	if len(spec.Containers) == 0 {
		bad("%s: no containers", w)
	}
	for _, x := range all {
		c := x.c
		where := fmt.Sprintf("%s container %s", w, c.Name)
		sc := c.SecurityContext
		if sc == nil {
			bad("%s: no securityContext", where)
			sc = &corev1.SecurityContext{}
		}
		nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
		if !nonRoot {
			bad("%s: runAsNonRoot is not true", where)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			bad("%s: runAsUser is 0 (root)", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("%s: privileged", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			bad("%s: readOnlyRootFilesystem must be true (write to volumes)", where)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			bad("%s: capabilities.drop must hold ALL", where)
		} else if len(sc.Capabilities.Add) > 0 {
			bad("%s: capabilities.add %v: none is needed", where, sc.Capabilities.Add)
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			bad("%s: seccompProfile must be RuntimeDefault", where)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
				bad("%s: resources.requests.%s is not set", where, r)
			}
		}
		if x.init {
			continue
		}
		for _, p := range []struct {
			what  string
			probe *corev1.Probe
		}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}} {
			if p.probe == nil {
				bad("%s: no %s", where, p.what)
				continue
			}
			if g := p.probe.HTTPGet; g != nil && g.Port.Type == intstr.String && !hasNamedPort([]corev1.Container{c}, g.Port.StrVal) {
				bad("%s: %s port %q is not one of its ports", where, p.what, g.Port.StrVal)
			}
		}
	}
	return errs
}

func probePath(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	return p.HTTPGet.Path
}

// coordinatorPolicy: 3 or 5 voters spread over zones, a disruption budget
// that keeps a quorum, a headless governing Service that publishes voters
// before they are ready, a volume for the Raft data and a configuration
// file for every voter.
func coordinatorPolicy(w workload, services []*corev1.Service, pdbs []*policyv1.PodDisruptionBudget, cms map[string]*corev1.ConfigMap) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if w.sts == nil {
		return []error{fmt.Errorf("%s: the coordinators must be a StatefulSet", w)}
	}
	n := w.replicas
	if n != 3 && n != 5 {
		bad("%s: %d replicas: want 3 or 5 voters", w, n)
	}
	if w.sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		bad("%s: podManagementPolicy must be Parallel (no voter is ready before a quorum runs)", w)
	}
	zone := false
	for _, t := range w.pod.Spec.TopologySpreadConstraints {
		if strings.Contains(t.TopologyKey, "zone") || strings.Contains(t.TopologyKey, "region") {
			zone = t.LabelSelector != nil && selectorMatches(t.LabelSelector.MatchLabels, w.pod.Labels)
		}
	}
	if !zone {
		bad("%s: no topologySpreadConstraint over zones selecting its own pods", w)
	}
	var budgets []*policyv1.PodDisruptionBudget
	for _, p := range pdbs {
		if p.Spec.Selector != nil && selectorMatches(p.Spec.Selector.MatchLabels, w.pod.Labels) {
			budgets = append(budgets, p)
		}
	}
	if len(budgets) != 1 {
		bad("%s: %d PodDisruptionBudgets select its pods, want 1", w, len(budgets))
	}
	for _, p := range budgets {
		q := Quorum(n)
		switch {
		case p.Spec.MinAvailable != nil:
			if p.Spec.MinAvailable.Type != intstr.Int {
				bad("PodDisruptionBudget %s: minAvailable %s: want a number of voters", p.Name, p.Spec.MinAvailable.String())
			} else if m := p.Spec.MinAvailable.IntValue(); m < q || m >= n {
				bad("PodDisruptionBudget %s: minAvailable %d with %d voters: want at least the quorum %d and fewer than %d (else no drain can proceed)", p.Name, m, n, q, n)
			}
		case p.Spec.MaxUnavailable != nil:
			if p.Spec.MaxUnavailable.Type != intstr.Int || p.Spec.MaxUnavailable.IntValue() < 1 || p.Spec.MaxUnavailable.IntValue() > n-q {
				bad("PodDisruptionBudget %s: maxUnavailable %s with %d voters: want 1..%d", p.Name, p.Spec.MaxUnavailable.String(), n, n-q)
			}
		default:
			bad("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", p.Name)
		}
	}
	headless := findService(services, w.sts.Spec.ServiceName)
	switch {
	case headless == nil:
		bad("%s: serviceName %q is not a rendered Service", w, w.sts.Spec.ServiceName)
	case headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses:
		bad("Service %s: the coordinators' governing Service must be headless (clusterIP None) and publish not-ready addresses", headless.Name)
	}
	if len(w.sts.Spec.VolumeClaimTemplates) == 0 {
		bad("%s: no volumeClaimTemplates for the Raft data", w)
	}
	for _, c := range w.pod.Spec.Containers {
		if probePath(c.ReadinessProbe) != "/health" {
			bad("%s container %s: readinessProbe must be the coordinator's /health, is %q", w, c.Name, probePath(c.ReadinessProbe))
		}
	}
	errs = append(errs, configFilesPolicy(w, cms, podNames(w.name, n))...)
	return errs
}

func podNames(sts string, n int) []string {
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("%s-%d", sts, i))
	}
	return names
}

// postgresPolicy: the agent's /primary as readiness, and a primary
// Service that selects these pods without publishing unready ones.
func postgresPolicy(w workload, services []*corev1.Service, cms map[string]*corev1.ConfigMap) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, c := range w.pod.Spec.Containers {
		if probePath(c.ReadinessProbe) != "/primary" {
			bad("%s container %s: readinessProbe must be the agent's /primary (the primary Service follows it), is %q", w, c.Name, probePath(c.ReadinessProbe))
		}
		if p := c.ReadinessProbe; p != nil && (p.PeriodSeconds > 1 || p.FailureThreshold > 1 || p.SuccessThreshold > 1) {
			bad("%s container %s: readinessProbe period %ds, thresholds %d/%d: want 1s, 1, 1 (the primary Service must follow a failover within a second)", w, c.Name, p.PeriodSeconds, p.SuccessThreshold, p.FailureThreshold)
		}
		if probePath(c.LivenessProbe) == "/health" || probePath(c.LivenessProbe) == "/primary" || probePath(c.LivenessProbe) == "/ready" {
			bad("%s container %s: livenessProbe %s fails while PostgreSQL is stopped on purpose (fenced): a restart would fight fencing", w, c.Name, probePath(c.LivenessProbe))
		}
	}
	primary := 0
	for _, s := range services {
		if strings.HasSuffix(s.Name, "-primary") && selectorMatches(s.Spec.Selector, w.pod.Labels) {
			primary++
			if s.Spec.PublishNotReadyAddresses {
				bad("Service %s: publishNotReadyAddresses must be false: readiness is what selects the primary", s.Name)
			}
		}
	}
	if primary != 1 {
		bad("%s: %d primary Services select its pods, want 1", w, primary)
	}
	var nodes []string
	if w.sts != nil {
		nodes = podNames(w.name, w.replicas)
		if w.sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
			bad("%s: updateStrategy must be OnDelete (only the primary is ready; replace pods one at a time, switching over first)", w)
		}
		if s := w.pod.Spec.ShareProcessNamespace; s == nil || !*s {
			bad("%s: shareProcessNamespace must be true (the pause process reaps the postmaster the agent restarts)", w)
		}
	} else {
		nodes = daemonSetNodes(w.pod)
		if len(nodes) == 0 {
			bad("%s: no nodeAffinity on kubernetes.io/hostname naming its PostgreSQL hosts", w)
		}
	}
	errs = append(errs, configFilesPolicy(w, cms, nodes)...)
	return errs
}

func daemonSetNodes(pod *corev1.PodTemplateSpec) []string {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return nil
	}
	var nodes []string
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == "kubernetes.io/hostname" && e.Operator == corev1.NodeSelectorOpIn {
				nodes = append(nodes, e.Values...)
			}
		}
	}
	return nodes
}

// configFilesPolicy: the pod's configuration ConfigMap holds <node>.yaml
// for every node the workload runs as.
func configFilesPolicy(w workload, cms map[string]*corev1.ConfigMap, nodes []string) []error {
	var errs []error
	for _, v := range w.pod.Spec.Volumes {
		if v.Name != "config" || v.ConfigMap == nil {
			continue
		}
		cm := cms[v.ConfigMap.Name]
		if cm == nil {
			return nil // reported by Policy
		}
		for _, n := range nodes {
			if _, ok := cm.Data[n+".yaml"]; !ok {
				errs = append(errs, fmt.Errorf("%s: ConfigMap %s has no %s.yaml", w, cm.Name, n))
			}
		}
		return errs
	}
	return []error{fmt.Errorf("%s: no volume named config from a ConfigMap", w)}
}

func selectorMatches(sel, podLabels map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(podLabels))
}

func findService(services []*corev1.Service, name string) *corev1.Service {
	for _, s := range services {
		if s.Name == name {
			return s
		}
	}
	return nil
}
