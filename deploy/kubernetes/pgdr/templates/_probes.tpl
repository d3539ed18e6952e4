{{/*
The agent's probes, shared by the PostgreSQL pod and the DaemonSet:
- readiness on /primary every second: only the primary is ready, which makes
  the primary Service's endpoints follow a failover within about a second of
  the agent's next health round after the promotion;
- liveness on /status, which answers while the agent serves HTTP whatever
  PostgreSQL's state: /health is 503 while PostgreSQL is stopped on purpose
  (fenced, or being rejoined), and a liveness restart must never fight that;
- startup on /status, so that a slow first start is not taken for a hang.
*/}}
{{- define "pgdr.agent.probes" -}}
startupProbe:
  httpGet:
    path: /status
    port: {{ .port }}
  periodSeconds: 2
  failureThreshold: 150
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
