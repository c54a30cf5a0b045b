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

{{/* The chart's own name/instance labels: on every object it renders, and what selects its objects. */}}
{{- define "ktls-sidecar.instanceLabels" -}}
app.kubernetes.io/name: {{ include "ktls-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The labels that select the pods the sidecar runs in: Service, metrics Service, PDB, NetworkPolicy,
PodMonitor and the Deployment's selector. `selectorLabels` replaces the default (the instance labels),
so a Service can select an existing app's pods by the labels they already carry (`app: billing`).
*/}}
{{- define "ktls-sidecar.selectorLabels" -}}
{{- if .Values.selectorLabels }}
{{- toYaml .Values.selectorLabels }}
{{- else }}
{{- include "ktls-sidecar.instanceLabels" . }}
{{- end }}
{{- end }}

{{/*
Labels of the modprobe DaemonSet's pods: a name of their own, so that no Service, PDB or
NetworkPolicy selecting the app pods (by the default instance labels) selects them too.
*/}}
{{- define "ktls-sidecar.nodeSetupLabels" -}}
app.kubernetes.io/name: {{ include "ktls-sidecar.name" . }}-node-setup
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-setup
{{- end }}

{{/* Labels of the pods the chart's own Deployment renders: the selector labels plus workload.podLabels. */}}
{{- define "ktls-sidecar.podLabels" -}}
{{- $sel := include "ktls-sidecar.selectorLabels" . | fromYaml }}
{{- range $k, $v := .Values.workload.podLabels }}
{{- if and (hasKey $sel $k) (ne (toString (get $sel $k)) (toString $v)) }}
{{- fail (printf "workload.podLabels.%s=%v contradicts the selector label %s=%v: the pods would not be selected" $k $v $k (get $sel $k)) }}
{{- end }}
{{- end }}
{{- toYaml (merge (dict) $sel .Values.workload.podLabels) }}
{{- end }}

{{- define "ktls-sidecar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name (.Chart.Version | default "0") | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ktls-sidecar.instanceLabels" . }}
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
{{- $ktls := dict "enabled" $v.ktls.enabled "direction" $v.ktls.direction "sampleRate" ($v.ktls.sampleRate | float64) "forceTls13Rx" $v.ktls.forceTls13Rx "drainOnDisable" $v.ktls.drainOnDisable "drainTimeout" $v.ktls.drainTimeout "keyUpdateRateLimit" $v.ktls.keyUpdateRateLimit "splice" $v.ktls.splice -}}
{{- with $v.ktls.ciphers }}{{ $_ := set $ktls "ciphers" . }}{{ end -}}
{{- $cfg := dict
  "listen" (dict "host" $v.sidecar.bindAddress "port" (int $v.sidecar.ports.https))
  "mode" $v.sidecar.mode
  "workers" $v.sidecar.workers
  "upstream" $upstream
  "tls" $tls
  "admin" (dict "host" $v.sidecar.bindAddress "port" (int $v.sidecar.ports.admin))
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
{{- include "ktls-sidecar.checkNativeSidecar" . }}
name: ktls-sidecar
image: {{ include "ktls-sidecar.image" . | quote }}
imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
{{- if .Values.nativeSidecar }}
# A native sidecar (Kubernetes >= 1.29): an init container that keeps running. The kubelet starts it
# (and waits for its startupProbe) before the app, and stops it only after the app has exited.
restartPolicy: Always
{{- end }}
# A crash's last log lines become the termination message (kubectl describe pod), even though
# the sidecar never writes /dev/termination-log itself.
terminationMessagePolicy: FallbackToLogsOnError
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
{{- /* A native sidecar is stopped after the app has exited, long after the endpoints were updated: no sleep then. */}}
{{- if and (gt (int .Values.sidecar.preStopSleepSeconds) 0) (not .Values.nativeSidecar) }}
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

{{/*
Shutdown order. Kubernetes removes a terminating pod from the endpoints while it signals the pod, so
new connections still arrive for a few seconds (sidecar.preStopSleepSeconds).
  regular sidecar: every container gets its preStop at t=0. The sidecar sleeps, then drains for
    shutdown.drainTimeout; the app's preStop sleeps through both, so the app serves every request
    the sidecar still forwards, and gets SIGTERM only after the sidecar is done.
  native sidecar: Kubernetes stops the app first and the sidecar after the app has exited. The app's
    preStop covers the endpoint update, then the app finishes its in-flight requests; the sidecar
    drains last (requests that arrive on kept-alive connections after the app exited get a 502).
terminationGracePeriodSeconds covers both: preStop sleep + drain + 10 s for the app's own exit.
*/}}

{{/* shutdown.drainTimeout (`30s`, `500ms`, `2m`, `1h`, or a number of ms) in whole seconds, rounded up. */}}
{{- define "ktls-sidecar.durationSeconds" -}}
{{- $s := toString . | trim -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $s -}}
{{- $unit := trimPrefix $num $s | trim -}}
{{- $factor := dict "" 0.001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- if or (eq $num "") (not (hasKey $factor $unit)) }}{{ fail (printf "sidecar.drainTimeout: %q is not a duration (30s, 500ms, 2m, 1h)" $s) }}{{ end -}}
{{- mulf (float64 $num) (get $factor $unit) | ceil | int -}}
{{- end }}

{{/* Seconds the app container's preStop sleeps. Arg: (list $ctx $explicit) where "" = derived. */}}
{{- define "ktls-sidecar.appPreStopSeconds" -}}
{{- $ctx := index . 0 -}}
{{- $explicit := index . 1 -}}
{{- $v := $ctx.Values -}}
{{- if ne (toString $explicit) "" -}}
{{- int $explicit -}}
{{- else if $v.nativeSidecar -}}
{{- int $v.sidecar.preStopSleepSeconds -}}
{{- else -}}
{{- add (int $v.sidecar.preStopSleepSeconds) (include "ktls-sidecar.durationSeconds" $v.sidecar.drainTimeout | int) 2 -}}
{{- end -}}
{{- end }}

{{/*
terminationGracePeriodSeconds. Arg: (list $ctx $explicit $appPreStop $key): "" = derived; an explicit
value too short for the sidecar's drain fails the render, naming $key.
*/}}
{{- define "ktls-sidecar.gracePeriodSeconds" -}}
{{- $ctx := index . 0 -}}
{{- $explicit := index . 1 -}}
{{- $appPreStop := index . 2 | int -}}
{{- $key := index . 3 -}}
{{- $v := $ctx.Values -}}
{{- $drain := include "ktls-sidecar.durationSeconds" $v.sidecar.drainTimeout | int -}}
{{- $need := 0 -}}
{{- if $v.nativeSidecar -}}
{{- $need = add $appPreStop $drain 1 -}}
{{- else -}}
{{- $need = add (max (add (int $v.sidecar.preStopSleepSeconds) $drain) $appPreStop) 1 -}}
{{- end -}}
{{- if eq (toString $explicit) "" -}}
{{- add $need 9 -}}
{{- else if lt (int $explicit) $need -}}
{{- fail (printf "%s=%v is shorter than the shutdown needs (%d s: app preStop, sidecar preStop and sidecar.drainTimeout); the kubelet would kill the pod mid-drain" $key $explicit $need) -}}
{{- else -}}
{{- int $explicit -}}
{{- end -}}
{{- end }}

{{/* The app container's lifecycle: a preStop sleep (the sleep action where the cluster has it, 1.30+, so the app image needs no `sleep` binary). */}}
{{- define "ktls-sidecar.appLifecycle" -}}
{{- $ctx := index . 0 -}}
{{- $seconds := index . 1 | int -}}
{{- if gt $seconds 0 -}}
lifecycle:
  preStop:
    {{- if semverCompare ">=1.30-0" $ctx.Capabilities.KubeVersion.Version }}
    sleep:
      seconds: {{ $seconds }}
    {{- else }}
    exec:
      command: ["sleep", {{ $seconds | toString | quote }}]
    {{- end }}
{{- end }}
{{- end }}

{{/* nativeSidecar needs the SidecarContainers feature: on by default from Kubernetes 1.29. */}}
{{- define "ktls-sidecar.checkNativeSidecar" -}}
{{- if and .Values.nativeSidecar (not (semverCompare ">=1.29-0" .Capabilities.KubeVersion.Version)) }}
{{- fail (printf "nativeSidecar: true needs Kubernetes >= 1.29 (init containers with restartPolicy: Always); the target is %s (helm template: pass --kube-version)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}

{{/* One of ServiceMonitor and PodMonitor: both would scrape every pod twice (and double every sum). */}}
{{- define "ktls-sidecar.checkOneMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: every pod would be scraped twice and every sum doubled; enable one" }}
{{- end }}
{{- end }}

{{/* interval, scrapeTimeout, relabelings, metricRelabelings of one ServiceMonitor/PodMonitor endpoint. */}}
{{- define "ktls-sidecar.scrapeSettings" -}}
interval: {{ .interval }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
