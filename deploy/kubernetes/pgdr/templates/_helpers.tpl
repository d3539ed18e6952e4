{{/* Names. Every object is <release>-pgdr-<part> (or <release>-<part> when the release is called pgdr...). */}}
{{- define "pgdr.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pgdr.coordinator.name" -}}{{ include "pgdr.fullname" . }}-coordinator{{- end -}}
{{- define "pgdr.coordinator.headless" -}}{{ include "pgdr.fullname" . }}-coordinator-hl{{- end -}}
{{- define "pgdr.postgres.name" -}}{{ include "pgdr.fullname" . }}-postgres{{- end -}}
{{- define "pgdr.postgres.headless" -}}{{ include "pgdr.fullname" . }}-postgres-hl{{- end -}}
{{- define "pgdr.postgres.primary" -}}{{ include "pgdr.fullname" . }}-primary{{- end -}}
{{- define "pgdr.agent.name" -}}{{ include "pgdr.fullname" . }}-agent{{- end -}}

{{- define "pgdr.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (coordinator, postgres, agent). */}}
{{- define "pgdr.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pgdr.image" -}}
{{- $img := index .root.Values.image .which -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* The coordinator pods' DNS names, one per ordinal. */}}
{{- define "pgdr.coordinator.host" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "pgdr.coordinator.name" .root) (int .i) (include "pgdr.coordinator.headless" .root) .root.Release.Namespace .root.Values.clusterDomain -}}
{{- end -}}

{{/* Validation of the values, included by every template that needs it. */}}
{{- define "pgdr.validate" -}}
{{- $c := .Values.coordinator -}}
{{- if $c.enabled -}}
{{- if not (or (eq (int $c.replicas) 3) (eq (int $c.replicas) 5)) -}}
{{- fail (printf "coordinator.replicas: %v: want 3 or 5 (an odd number of voters; an even one adds no fault tolerance)" $c.replicas) -}}
{{- end -}}
{{- if not $c.regions -}}{{- fail "coordinator.regions is required: the region of each coordinator, by ordinal" -}}{{- end -}}
{{- if not $c.tls.secretName -}}{{- fail "coordinator.tls.secretName is required: a Secret with ca.crt and <pod>.crt/<pod>.key for each coordinator (the API and Raft always use TLS)" -}}{{- end -}}
{{- end -}}
{{- $p := .Values.postgres -}}
{{- if $p.enabled -}}
{{- if not $p.cluster -}}{{- fail "postgres.cluster is required: the PostgreSQL cluster's name" -}}{{- end -}}
{{- if not $p.agentConfig.repos -}}{{- fail "postgres.agentConfig.repos is required: at least one repository (pkg/config repos[])" -}}{{- end -}}
{{- if and (not $c.enabled) (not $p.coordinatorAddresses) -}}{{- fail "postgres.coordinatorAddresses is required when coordinator.enabled is false" -}}{{- end -}}
{{- if not (or $p.tls.secretName (and $p.tokens.secretName $p.tokens.caSecretName)) -}}
{{- fail "postgres.tls.secretName (or postgres.tokens.secretName with postgres.tokens.caSecretName) is required: how the agents authenticate to the coordinators" -}}
{{- end -}}
{{- if eq $p.mode "pod" -}}
{{- if lt (int $p.pod.replicas) 2 -}}{{- fail "postgres.pod.replicas: want at least 2 (a primary and a replica)" -}}{{- end -}}
{{- if not $p.pod.regions -}}{{- fail "postgres.pod.regions is required: the region of each PostgreSQL pod, by ordinal" -}}{{- end -}}
{{- if not $p.pod.authSecretName -}}{{- fail "postgres.pod.authSecretName is required: a Secret with superuser-password and replication-password" -}}{{- end -}}
{{- else if eq $p.mode "daemonset" -}}
{{- if not $p.daemonset.nodes -}}{{- fail "postgres.daemonset.nodes is required: the Kubernetes nodes whose PostgreSQL the agent serves" -}}{{- end -}}
{{- range $i, $n := $p.daemonset.nodes -}}
{{- if not (and $n.name $n.region $n.host) -}}{{- fail (printf "postgres.daemonset.nodes[%d]: name, region and host are required" $i) -}}{{- end -}}
{{- end -}}
{{- if or (kindIs "invalid" $p.daemonset.runAsUser) (kindIs "invalid" $p.daemonset.runAsGroup) -}}
{{- fail "postgres.daemonset.runAsUser and runAsGroup are required: the uid and gid owning the host's data directory" -}}
{{- end -}}
{{- if eq (int $p.daemonset.runAsUser) 0 -}}{{- fail "postgres.daemonset.runAsUser: 0 (root) is refused; PostgreSQL's owner is never root" -}}{{- end -}}
{{- else -}}
{{- fail (printf "postgres.mode: %q: want pod or daemonset" $p.mode) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Container security context: non-root, nothing to escalate to. */}}
{{- define "pgdr.containerSecurity" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The agent's coordinator section: addresses and credentials. */}}
{{- define "pgdr.agent.coordinator" -}}
{{- $root := .root -}}
{{- $p := $root.Values.postgres -}}
{{- $addrs := list -}}
{{- if $root.Values.coordinator.enabled -}}
{{- range $i := until (int $root.Values.coordinator.replicas) -}}
{{- $addrs = append $addrs (printf "%s:%d" (include "pgdr.coordinator.host" (dict "root" $root "i" $i)) (int $root.Values.coordinator.ports.api)) -}}
{{- end -}}
{{- else -}}
{{- $addrs = $p.coordinatorAddresses -}}
{{- end -}}
{{- $co := dict "addresses" $addrs "ca_file" "/etc/pgdr/tls/ca.crt" -}}
{{- if $p.tls.secretName -}}
{{- $_ := set $co "cert_file" (printf "/etc/pgdr/tls/%s.crt" .node) -}}
{{- $_ := set $co "key_file" (printf "/etc/pgdr/tls/%s.key" .node) -}}
{{- else -}}
{{- $_ := set $co "token_file" (printf "/etc/pgdr/tokens/%s.token" .node) -}}
{{- end -}}
{{- toYaml $co -}}
{{- end -}}

{{/* A pod template's labels: its selector and the common ones. */}}
{{- define "pgdr.podLabels" -}}
{{ include "pgdr.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}
