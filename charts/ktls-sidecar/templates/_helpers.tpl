{{/*
Names and labels.
*/}}
{{- define "ktls-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ktls-sidecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ktls-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ktls-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ktls-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name (.Chart.Version | default "0") | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ktls-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | default "" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ktls-sidecar
{{- end }}

{{/* Paths inside the sidecar container. Each is its own directory mount (see ktls-sidecar.volumeMounts). */}}
{{- define "ktls-sidecar.configDir" -}}/etc/ktls-sidecar/config{{- end }}
{{- define "ktls-sidecar.tlsDir" -}}/etc/ktls-sidecar/tls{{- end }}
{{- define "ktls-sidecar.clientCADir" -}}/etc/ktls-sidecar/client-ca{{- end }}

{{- define "ktls-sidecar.configMapName" -}}{{ include "ktls-sidecar.fullname" . }}-config{{- end }}

{{/* The TLS Secret: sidecar.tls.secretName, else <fullname>-tls (cert-manager's target when enabled). */}}
{{- define "ktls-sidecar.tlsSecretName" -}}
{{- .Values.sidecar.tls.secretName | default (printf "%s-tls" (include "ktls-sidecar.fullname" .)) -}}
{{- end }}

{{- define "ktls-sidecar.image" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (.Values.sidecar.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The sidecar's config file as a dict. Keys are the sidecar's config schema (proxy/config/schema.ts);
sidecar.extraConfig is merged last.
*/}}
{{- define "ktls-sidecar.configDict" -}}
{{- $v := .Values -}}
{{- $upstream := dict -}}
{{- if eq $v.sidecar.mode "tcp" -}}
{{- $_ := set $upstream "address" (printf "%s:%d" (include "ktls-sidecar.hostForAddress" $v.upstream.host) (int $v.upstream.port)) -}}
{{- $_ := set $upstream "proxyProtocol" ($v.upstream.proxyProtocol | toString) -}}
{{- else -}}
{{- $_ := set $upstream "url" (printf "%s://%s:%d" $v.upstream.scheme (include "ktls-sidecar.hostForAddress" $v.upstream.host) (int $v.upstream.port)) -}}
{{- end -}}
{{- $tls := dict "cert" (printf "%s/tls.crt" (include "ktls-sidecar.tlsDir" .)) "key" (printf "%s/tls.key" (include "ktls-sidecar.tlsDir" .)) "minVersion" $v.sidecar.tls.minVersion -}}
{{- with $v.sidecar.tls.ciphers }}{{ $_ := set $tls "ciphers" . }}{{ end -}}
{{- with $v.sidecar.tls.ciphersuites }}{{ $_ := set $tls "ciphersuites" . }}{{ end -}}
{{- if $v.sidecar.mtls.enabled -}}
{{- $_ := set $tls "clientCA" (printf "%s/%s" (include "ktls-sidecar.clientCADir" .) $v.sidecar.mtls.caKey) -}}
{{- $_ := set $tls "requestCert" $v.sidecar.mtls.requestCert -}}
{{- end -}}
{{- $ktls := dict "enabled" $v.ktls.enabled "direction" $v.ktls.direction "sampleRate" ($v.ktls.sampleRate | float64) "forceTls13Rx" $v.ktls.forceTls13Rx "drainOnDisable" $v.ktls.drainOnDisable "drainTimeout" $v.ktls.drainTimeout "keyUpdateRateLimit" $v.ktls.keyUpdateRateLimit -}}
{{- with $v.ktls.ciphers }}{{ $_ := set $ktls "ciphers" . }}{{ end -}}
{{- $cfg := dict
  "listen" (dict "host" "0.0.0.0" "port" (int $v.sidecar.ports.https))
  "mode" $v.sidecar.mode
  "workers" $v.sidecar.workers
  "upstream" $upstream
  "tls" $tls
  "admin" (dict "host" "0.0.0.0" "port" (int $v.sidecar.ports.admin))
  "log" (dict "level" $v.sidecar.logLevel)
  "shutdown" (dict "drainTimeout" $v.sidecar.drainTimeout)
  "config" (dict "watch" true)
  "ktls" $ktls
-}}
{{- $merged := mergeOverwrite $cfg (deepCopy ($v.sidecar.extraConfig | default dict)) -}}
{{- toJson $merged -}}
{{- end }}

{{/* IPv6 literals need brackets in host:port and URLs. */}}
{{- define "ktls-sidecar.hostForAddress" -}}
{{- if contains ":" . }}[{{ . }}]{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
Checksum of the config WITHOUT ktls.enabled, for the pod template. ktls.enabled is the runtime flag:
the sidecar applies it live from the watched file, so flipping it must not roll the pods (that would
make the rollback slow and drop connections). Every other key needs a restart, so it is in the sum.
*/}}
{{- define "ktls-sidecar.configChecksum" -}}
{{- $cfg := include "ktls-sidecar.configDict" . | fromJson -}}
{{- $ktls := omit $cfg.ktls "enabled" -}}
{{- $_ := set $cfg "ktls" $ktls -}}
{{- toJson $cfg | sha256sum -}}
{{- end }}

{{/* Pod annotations the sidecar needs: restart checksum and Prometheus scrape hints. */}}
{{- define "ktls-sidecar.podAnnotations" -}}
checksum/ktls-sidecar-config: {{ include "ktls-sidecar.configChecksum" . }}
{{- if .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.sidecar.ports.admin | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
The sidecar container. Usable from your own chart (see docs/deploy.md):
  containers:
    - {{ include "ktls-sidecar.container" $ctx | nindent 6 }}
where $ctx is this chart's context (Values, Release, Chart).
*/}}
{{- define "ktls-sidecar.container" -}}
name: ktls-sidecar
image: {{ include "ktls-sidecar.image" . | quote }}
imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
args:
  - --config
  - {{ include "ktls-sidecar.configDir" . }}/config.yaml
ports:
  - name: https
    containerPort: {{ .Values.sidecar.ports.https }}
    protocol: TCP
  - name: admin
    containerPort: {{ .Values.sidecar.ports.admin }}
    protocol: TCP
{{- range .Values.sidecar.env }}
{{- if eq (.name | default "") "KTLS_SIDECAR_KTLS_ENABLED" "KTLS_SIDECAR_CONFIG_WATCH" "KTLS_SIDECAR_CONFIG" }}
{{- fail (printf "sidecar.env must not set %s: env overrides the config file on every reload, which would pin the runtime flag (use ktls.enabled)" .name) }}
{{- end }}
{{- end }}
{{- with .Values.sidecar.env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  # Directory mounts, never subPath: a subPath mount is a copy the kubelet never updates, so the
  # sidecar's config watch (ktls.enabled) would not see ConfigMap changes.
  - name: ktls-sidecar-config
    mountPath: {{ include "ktls-sidecar.configDir" . }}
    readOnly: true
  - name: ktls-sidecar-tls
    mountPath: {{ include "ktls-sidecar.tlsDir" . }}
    readOnly: true
  {{- if .Values.sidecar.mtls.enabled }}
  - name: ktls-sidecar-client-ca
    mountPath: {{ include "ktls-sidecar.clientCADir" . }}
    readOnly: true
  {{- end }}
  - name: ktls-sidecar-tmp
    mountPath: /tmp
{{- with .Values.sidecar.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.sidecar.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.sidecar.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if gt (int .Values.sidecar.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ .Values.sidecar.preStopSleepSeconds | toString | quote }}]
{{- end }}
{{- with .Values.sidecar.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.sidecar.securityContext | nindent 2 }}
{{- end }}

{{/* The sidecar's volumes, for the pod spec's `volumes:` list. */}}
{{- define "ktls-sidecar.volumes" -}}
- name: ktls-sidecar-config
  configMap:
    name: {{ include "ktls-sidecar.configMapName" . }}
- name: ktls-sidecar-tls
  secret:
    secretName: {{ include "ktls-sidecar.tlsSecretName" . }}
    defaultMode: {{ .Values.sidecar.secretDefaultMode }}
{{- if .Values.sidecar.mtls.enabled }}
- name: ktls-sidecar-client-ca
{{- if .Values.sidecar.mtls.caSecretName }}
  secret:
    secretName: {{ .Values.sidecar.mtls.caSecretName }}
    defaultMode: {{ .Values.sidecar.secretDefaultMode }}
{{- else }}
  configMap:
    name: {{ required "sidecar.mtls.enabled needs sidecar.mtls.caSecretName or sidecar.mtls.caConfigMapName" .Values.sidecar.mtls.caConfigMapName }}
{{- end }}
{{- end }}
- name: ktls-sidecar-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}
