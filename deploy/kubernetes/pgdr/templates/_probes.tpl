{{/*
The agent's probes, shared by the PostgreSQL pod and the DaemonSet:
- readiness on /primary every second: only the primary is ready, which makes
  the primary Service's endpoints follow a failover within about a second of
  the agent's next health round after the promotion;
- liveness on /status, which answers while the agent serves HTTP whatever
  PostgreSQL's state: /health is 503 while PostgreSQL is stopped on purpose
  (fenced, or being rejoined), and a liveness restart must never fight that;
- startup on /status for up to an hour (pg_ctl start waits that long for
  crash recovery before the agent runs), so a long recovery is not a hang.
*/}}
{{- define "pgdr.agent.probes" -}}
startupProbe:
  httpGet:
    path: /status
    port: {{ .port }}
  periodSeconds: 2
  failureThreshold: 1800
readinessProbe:
  httpGet:
    path: /primary
    port: {{ .port }}
  periodSeconds: 1
  timeoutSeconds: 1
  successThreshold: 1
  failureThreshold: 1
livenessProbe:
  httpGet:
    path: /status
    port: {{ .port }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{/* The agent's Secrets: TLS (or the CA and tokens) and the extra ones. */}}
{{- define "pgdr.agent.secretVolumes" -}}
{{- $p := .Values.postgres -}}
- name: tls
  secret:
    secretName: {{ default $p.tokens.caSecretName $p.tls.secretName }}
    defaultMode: 0440
{{- if not $p.tls.secretName }}
- name: tokens
  secret:
    secretName: {{ $p.tokens.secretName }}
    defaultMode: 0440
{{- end }}
{{- range $p.extraSecrets }}
- name: secret-{{ . }}
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* The PostgreSQL pod's environment, for pgdr-pod-start init and run. */}}
{{- define "pgdr.postgres.env" -}}
{{- $p := .Values.postgres -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: PGDATA
  value: /var/lib/postgresql/data/pgdata
- name: PGDR_CONFIG
  value: /etc/pgdr/config/$(POD_NAME).yaml
- name: PGDR_BOOTSTRAP_POD
  value: {{ ternary "" (printf "%s-%d" (include "pgdr.postgres.name" .) (int $p.pod.bootstrapOrdinal)) (lt (int $p.pod.bootstrapOrdinal) 0) | quote }}
- name: PGDR_PRIMARY_HOST
  value: {{ printf "%s.%s.svc.%s" (include "pgdr.postgres.primary" .) .Release.Namespace .Values.clusterDomain }}
- name: PGDR_PORT
  value: {{ $p.port | quote }}
- name: PGDR_REPLICATION_USER
  value: {{ $p.pod.replicationUser }}
- name: PGDR_AUTH_DIR
  value: /etc/pgdr/auth
- name: PGPASSFILE
  value: /var/lib/postgresql/data/.pgpass
{{- end -}}
