#!/usr/bin/env bash
# Container image test: build the repository's Dockerfile with podman, offline from registries, then
# serve one HTTPS request through the container to an upstream on the host.
#
#   bash test/image/run.sh            # prints `image: N passed, N failed`; exit 1 if any failed
#
# Needs root, podman, runc, debootstrap, openssl, curl (Debian: apt-get install podman runc debootstrap).
# No registry is contacted for images: the Dockerfile's base image is built locally by base-image.sh
# (debootstrap + the checkout's Node 24 from npm ci) and tagged with the exact name the FROM line
# uses, then cached.
# The build itself still reaches the Debian mirror (build tools) and the npm registry (`npm ci`).
#
# Machine quirks this script works around (measured, see TOOLCHAIN.md):
# - RUN steps fail under crun on hybrid cgroups  -> podman build --isolation=chroot
# - crun cannot setrlimit without CAP_SYS_RESOURCE -> podman --runtime runc run --ulimit ...
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${KTLS_IMAGE_TEST_TAG:-localhost/ktls-sidecar:image-test}
name=ktls-image-test-$$
started=$(date +%s)
passed=0
failed=0
work=$(mktemp -d /tmp/ktls-image-test.XXXXXX)
upstream_pid=

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "ok - $1"; }
fail() { failed=$((failed + 1)); say "not ok - $1"; [[ $# -gt 1 ]] && printf '  %s\n' "${@:2}"; }
summary() {
  say "# image test took $(( $(date +%s) - started )) s"
  say "image: $passed passed, $failed failed"
}
cleanup() {
  podman --runtime runc rm --ignore -f -t 0 "$name" "$name-app" "$name-chart" >/dev/null 2>&1 || true
  [[ -n "$upstream_pid" ]] && kill "$upstream_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

podman_run() { podman --runtime runc run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$@"; }

# --- prerequisites -----------------------------------------------------------------------------
missing=()
for tool in podman runc debootstrap openssl curl node; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  fail "prerequisites" "missing: ${missing[*]} (apt-get install podman runc debootstrap openssl curl)"
  summary; exit 1
fi

# --- base image --------------------------------------------------------------------------------
base=$(sed -n 's/^ARG NODE_IMAGE=\([^[:space:]]*\).*/\1/p' "$repo/Dockerfile" | head -n1)
if [[ -z "$base" ]]; then fail "Dockerfile names its base image in ARG NODE_IMAGE"; summary; exit 1; fi
t=$(date +%s)
if bash "$here/base-image.sh" "$base" >"$work/base.log" 2>&1; then
  pass "base image $base ready ($(( $(date +%s) - t )) s)"
else
  fail "base image $base" "$(tail -n 5 "$work/base.log")"; summary; exit 1
fi

# --- build -------------------------------------------------------------------------------------
# This machine's CA bundle goes in as a build secret: egress may pass a TLS-intercepting proxy whose
# CA only the host trusts. It is mounted for the `npm ci` step only, never stored in the image.
build_args=()
ca_bundle=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
[[ -s "$ca_bundle" ]] && build_args+=(--secret "id=ca_bundle,src=$ca_bundle")
t=$(date +%s)
if podman build --isolation=chroot --pull=never --layers "${build_args[@]}" -t "$image" -f "$repo/Dockerfile" "$repo" >"$work/build.log" 2>&1; then
  pass "podman build ($(( $(date +%s) - t )) s)"
else
  fail "podman build ($(( $(date +%s) - t )) s)" "$(grep -v '^ *$' "$work/build.log" | tail -n 15)"
  summary; exit 1
fi

# --- image metadata ----------------------------------------------------------------------------
meta() { podman image inspect --format "$1" "$image" 2>/dev/null; }
user=$(meta '{{.Config.User}}')
[[ "$user" =~ ^[0-9]+(:[0-9]+)?$ && "${user%%:*}" != 0 ]] && pass "runs as numeric non-root user ($user)" || fail "numeric non-root USER" "got '$user'"
entry=$(meta '{{json .Config.Entrypoint}}')
[[ "$entry" == '["ktls-sidecar"]' ]] && pass "ENTRYPOINT [\"ktls-sidecar\"]" || fail "ENTRYPOINT" "got $entry"
ports=$(meta '{{json .Config.ExposedPorts}}')
[[ "$ports" == *'"8443/tcp"'* && "$ports" == *'"9901/tcp"'* ]] && pass "EXPOSE 8443 9901" || fail "EXPOSE 8443 9901" "got $ports"
hc=$(meta '{{json .Config.Healthcheck}}')
[[ "$hc" == null || -z "$hc" ]] && pass "no HEALTHCHECK" || fail "no HEALTHCHECK" "got $hc"
title=$(meta '{{index .Config.Labels "org.opencontainers.image.title"}}')
[[ "$title" == ktls-sidecar ]] && pass "OCI labels" || fail "OCI labels" "title='$title'"

# The Node major the Dockerfile's base names (node:24-... -> 24), and that the image really runs.
want_major=$(sed -nE 's|^(.*/)?node:([0-9]+)([.-].*)?$|\2|p' <<<"${base%@*}")
image_node=$(podman_run --rm --entrypoint node "$image" --version 2>&1)
[[ -n "$want_major" && "$image_node" == "v$want_major."* ]] && pass "runtime Node $image_node (the base names $want_major)" \
  || fail "runtime Node version" "got '$image_node', the base $base names ${want_major:-no major}"

# Production dependencies only, the addon present, no compilers or package managers. undici and
# ws are only the tests' and the bench's clients (devDependencies).
if out=$(podman_run --rm --entrypoint /bin/sh "$image" -c '
    set -e
    test -f /app/native/build/Release/ktls_native.node || { echo "addon missing"; exit 1; }
    test -d /app/node_modules/pino || { echo "prod dependency pino missing"; exit 1; }
    for dev in typescript tap tsx eslint kubernetes-models autocannon undici ws node; do
      test ! -e /app/node_modules/$dev || { echo "dev dependency $dev present"; exit 1; }
    done
    for tool in g++ gcc make npm; do
      ! command -v $tool >/dev/null || { echo "$tool present"; exit 1; }
    done' 2>&1); then
  pass "runtime stage: addon + production dependencies only, no compilers, no npm"
else
  fail "runtime stage contents" "$out"
fi

# --- serve one request -------------------------------------------------------------------------
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{process.stdout.write(String(s.address().port));s.close()})'; }

mkdir -p "$work/config" "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/tls/tls.key" -out "$work/tls/tls.crt" >/dev/null 2>&1
# The container runs as 65532 and mounts these read-only; the key is a throwaway test key.
chmod 0755 "$work" "$work/config" "$work/tls"; chmod 0644 "$work/tls/tls.key" "$work/tls/tls.crt"

# Upstream on the host (the container shares the host network): echoes a marker and the path.
node -e '
  const srv = require("http").createServer((req, res) => res.end("upstream-ok " + req.url + "\n"));
  srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
' >"$work/upstream.port" 2>"$work/upstream.log" &
upstream_pid=$!
for _ in $(seq 50); do [[ -s "$work/upstream.port" ]] && break; sleep 0.1; done
up_port=$(head -n1 "$work/upstream.port")
tls_port=$(free_port)
admin_port=$(free_port)

# The config directory is laid out the way the kubelet writes a ConfigMap volume: config.yaml ->
# ..data/config.yaml, ..data -> a timestamped directory, swapped atomically on update.
write_config_version() {  # $1 = version dir name, $2 = ktls.enabled
  mkdir -p "$work/config/$1"
  cat >"$work/config/$1/config.yaml" <<EOF
listen: { host: 127.0.0.1, port: $tls_port }
mode: http
upstream: { url: "http://127.0.0.1:$up_port" }
tls: { cert: /etc/ktls-sidecar/tls/tls.crt, key: /etc/ktls-sidecar/tls/tls.key }
admin: { host: 127.0.0.1, port: $admin_port }
config: { watch: true }
ktls: { enabled: $2, direction: tx }
EOF
  chmod 0755 "$work/config/$1"; chmod 0644 "$work/config/$1/config.yaml"
  ln -sfn "$1" "$work/config/..data_tmp"
  mv -T "$work/config/..data_tmp" "$work/config/..data"
}
write_config_version ..2026_01_01_00_00_00.1 true
ln -s ..data/config.yaml "$work/config/config.yaml"

# As in the pod: read-only root, no capabilities, no privilege escalation, the image's own user.
if podman_run -d --name "$name" --network=host --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    -v "$work/config:/etc/ktls-sidecar/config:ro" -v "$work/tls:/etc/ktls-sidecar/tls:ro" \
    "$image" --config /etc/ktls-sidecar/config/config.yaml >"$work/run.log" 2>&1; then
  pass "container started (read-only root, --cap-drop=ALL)"
else
  fail "container start" "$(tail -n 5 "$work/run.log")"; summary; exit 1
fi

ready=
for _ in $(seq 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/readyz" 2>/dev/null; then ready=1; break; fi
  [[ "$(podman inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" == true ]] || break
  sleep 0.2
done
if [[ -n "$ready" ]]; then
  pass "/readyz answers 200"
else
  fail "/readyz" "$(podman logs "$name" 2>&1 | tail -n 10)"
fi

body=$(curl -sS --max-time 10 --cacert "$work/tls/tls.crt" --resolve "localhost:$tls_port:127.0.0.1" \
  "https://localhost:$tls_port/through-the-image" 2>&1)
if [[ "$body" == "upstream-ok /through-the-image" ]]; then
  pass "HTTPS request served through the container to the upstream"
else
  fail "HTTPS request through the container" "got: $body" "$(podman logs "$name" 2>&1 | tail -n 5)"
fi

metrics=$(curl -sS --max-time 5 "http://127.0.0.1:$admin_port/metrics" 2>&1)
if grep -q '^ktls_sidecar_bytes_sent_total{.*} [1-9]' <<<"$metrics"; then
  pass "/metrics counts the request's bytes ($(grep -o 'ktls_reason="[a-z_]*"' <<<"$metrics" | sort -u | tr '\n' ' '))"
else
  fail "/metrics counts bytes" "$(grep '^ktls_sidecar_bytes' <<<"$metrics" | head -n 3)"
fi

if doctor=$(podman exec "$name" ktls-sidecar doctor --json 2>/dev/null; true) && node -e 'JSON.parse(process.argv[1])' "$doctor" 2>/dev/null; then
  pass "ktls-sidecar doctor --json inside the container"
else
  fail "ktls-sidecar doctor --json" "${doctor:0:300}"
fi

# The chart's rollback path: a ConfigMap update flips ktls.enabled live, without a restart.
write_config_version ..2026_01_01_00_01_00.2 false
flag=
for _ in $(seq 150); do  # the sidecar polls its file every second; allow 30 s before calling it failed
  flag=$(curl -sS --max-time 2 "http://127.0.0.1:$admin_port/ktls" 2>/dev/null)
  [[ "$flag" == *'"enabled":false'* ]] && break
  sleep 0.2
done
restarts=$(podman inspect --format '{{.RestartCount}}' "$name" 2>/dev/null)
# Read the whole page before matching: `curl | grep -q` under pipefail fails whenever grep exits first
# and curl gets EPIPE ("Failed writing body"), which made this check flaky.
metrics=$(curl -sS --max-time 5 "http://127.0.0.1:$admin_port/metrics" 2>&1)
if [[ "$flag" == *'"enabled":false'* && "$restarts" == 0 ]] && grep -q '^ktls_sidecar_ktls_enabled 0' <<<"$metrics"; then
  pass "ConfigMap-style update of ktls.enabled applied live (GET /ktls: $flag)"
else
  fail "ConfigMap-style flag flip" "GET /ktls: $flag, restarts: $restarts, gauge: $(grep '^ktls_sidecar_ktls_enabled' <<<"$metrics")" "$(podman logs "$name" 2>&1 | tail -n 5)"
fi

# --- the chart's pod --------------------------------------------------------------------------
# The image with the config the Helm chart renders (default values), at the chart's mount paths and
# ports, on its own network namespace like a pod: the app container joins the sidecar's namespace and
# listens on loopback 8080. The host reaches the pod only through published ports, as the kubelet
# reaches the pod IP, so /readyz answering proves admin.host 0.0.0.0 is what probes need.
mkdir -p "$work/chart-config"; chmod 0755 "$work/chart-config"
if (cd "$repo" && npx tsx test/image/chart-config.ts) >"$work/chart-config/config.yaml" 2>"$work/chart-config.log"; then
  chmod 0644 "$work/chart-config/config.yaml"
  podman_run -d --name "$name-chart" -p 127.0.0.1::8443 -p 127.0.0.1::9901 \
      --read-only --cap-drop=ALL --security-opt=no-new-privileges --tmpfs /tmp \
      -v "$work/chart-config:/etc/ktls-sidecar/config:ro" -v "$work/tls:/etc/ktls-sidecar/tls:ro" \
      "$image" --config /etc/ktls-sidecar/config/config.yaml >"$work/chart-run.log" 2>&1
  podman_run -d --name "$name-app" --network "container:$name-chart" --read-only --cap-drop=ALL --entrypoint node "$image" \
      -e 'require("http").createServer((q, r) => r.end("app-ok " + q.url + "\n")).listen(8080, "127.0.0.1")' >>"$work/chart-run.log" 2>&1
  https_hp=$(podman port "$name-chart" 8443/tcp 2>/dev/null | head -n1)
  admin_hp=$(podman port "$name-chart" 9901/tcp 2>/dev/null | head -n1)
  ready=
  for _ in $(seq 100); do
    [[ -n "$admin_hp" ]] && curl -fsS -o /dev/null "http://$admin_hp/readyz" 2>/dev/null && { ready=1; break; }
    sleep 0.2
  done
  body=$(curl -sS --max-time 10 --cacert "$work/tls/tls.crt" --resolve "localhost:${https_hp##*:}:127.0.0.1" \
    "https://localhost:${https_hp##*:}/from-the-chart" 2>&1)
  if [[ -n "$ready" && "$body" == "app-ok /from-the-chart" ]]; then
    pass "chart-rendered config: probes reach the admin port from outside the pod, HTTPS reaches the app on loopback"
  else
    fail "chart-rendered config in a pod-like setup" "ready=${ready:-no} body=$body" "$(tail -n 3 "$work/chart-run.log")" \
      "$(podman logs "$name-chart" 2>&1 | tail -n 5)"
  fi
  podman --runtime runc rm --ignore -f -t 0 "$name-app" "$name-chart" >/dev/null 2>&1
else
  fail "render the chart's config" "$(tail -n 5 "$work/chart-config.log")"
fi

# SIGTERM to PID 1 (the sidecar itself, no init): it must drain and exit 0 well before the kill.
t=$(date +%s)
podman stop -t 20 "$name" >/dev/null 2>&1
code=$(podman inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null)
took=$(( $(date +%s) - t ))
if [[ "$code" == 0 && $took -lt 20 ]]; then
  pass "SIGTERM: exit 0 after ${took} s"
else
  fail "SIGTERM handling" "exit code $code after ${took} s" "$(podman logs "$name" 2>&1 | tail -n 5)"
fi

summary
[[ $failed -eq 0 ]]
