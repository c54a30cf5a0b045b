#!/usr/bin/env bash
# Pod test: the chart's manifests for a legacy app plus the sidecar, run as a real pod with podman.
#
#   bash test/pod/run.sh        # prints `pod: N passed, N failed` last; exit 1 if any failed
#
# test/pod/manifests.ts renders the chart (test/pod/values.yaml) and applies its drop-in patch to the
# legacy Deployment (test/pod/legacy-app.yaml, labelled `app: billing`) with kustomize, next to the TLS
# Secret; `podman kube play --network none` runs the resulting pod from the locally built image. Both
# forms are run: the sidecar as a regular container, and as a native sidecar (nativeSidecar: true).
# Checks, per form: the probes' endpoints answer; a TLS client in the pod's network namespace gets the
# app's answer through the sidecar with the Secret's certificate; every pod selector in the manifests (the
# chart's Service, the Deployment's) matches the running pod's labels; flipping ktls.enabled in the
# ConfigMap (the kubelet's atomic ..data swap) changes GET /ktls with no container restarted; and the
# kubelet's termination sequence, played from the manifest, drains in order (in-flight request finished,
# new connections served during the preStop window, no SIGKILL, the sidecar never without its app).
#
# Needs root, podman (4.3), runc, catatonit (podman's pause image), openssl, curl, nsenter, node, and the
# image `bash test/image/run.sh` builds (KTLS_POD_IMAGE, default localhost/ktls-sidecar:image-test).
# KTLS_POD_CHART runs another copy of the chart (default charts/ktls-sidecar).
# Bounded: every wait has a deadline; the whole run takes well under 3 minutes.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${KTLS_POD_IMAGE:-localhost/ktls-sidecar:image-test}
chart=${KTLS_POD_CHART:-$repo/charts/ktls-sidecar}
started=$(date +%s)
passed=0
failed=0
work=$(mktemp -d /tmp/ktls-pod-test.XXXXXX)
pods=()
bg=()

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "ok - $1"; }
fail() { failed=$((failed + 1)); say "not ok - $1"; [[ $# -gt 1 ]] && printf '  %s\n' "${@:2}"; }
summary() {
  say "# pod test took $(( $(date +%s) - started )) s"
  say "pod: $passed passed, $failed failed"
}
cleanup() {
  local p
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pods[@]}"; do podman pod rm --ignore -f -t 0 "$p" >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # cleanup runs on exit; a bounded preStop sleep of an interrupted run may outlive it

# podman here needs runc (crun cannot setrlimit without CAP_SYS_RESOURCE, and fails on hybrid cgroups)
# and explicit ulimits for every container kube play creates; a private containers.conf sets both.
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"

now_ms() { date +%s%3N; }
# A container's state field (Go template), e.g. ctr_state NAME '{{.State.ExitCode}}'.
ctr_state() { podman inspect --format "$2" "$1" 2>/dev/null; }
# Wait (bounded) until a command succeeds: until SECONDS CMD...
until_ok() { local deadline=$(( $(date +%s) + $1 )); shift; until "$@"; do (( $(date +%s) >= deadline )) && return 1; sleep 0.2; done; }
fact() { node -e 'const f=require(process.argv[1]); const v=process.argv[2].split(".").reduce((o,k)=>o?.[k],f); process.stdout.write(typeof v==="object"?JSON.stringify(v):String(v))' "$1/facts.json" "$2"; }

# --- prerequisites -----------------------------------------------------------------------------
missing=()
for tool in podman runc catatonit openssl curl nsenter node; do
  command -v "$tool" >/dev/null || [[ $tool == catatonit && -x /usr/libexec/podman/catatonit ]] || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  fail "prerequisites" "missing: ${missing[*]} (apt-get install podman runc catatonit openssl curl util-linux)"
  summary; exit 1
fi
if ! podman image exists "$image"; then
  fail "image $image" "not found; build it with: bash test/image/run.sh"
  summary; exit 1
fi

mkdir -p "$work/src"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=billing.example \
  -addext subjectAltName=DNS:billing.example -keyout "$work/src/tls.key" -out "$work/src/tls.crt" >/dev/null 2>&1
want_fp=$(openssl x509 -in "$work/src/tls.crt" -noout -fingerprint -sha256)

# --- one form of the pod ------------------------------------------------------------------------
run_form() {  # $1 = regular | native
  local form=$1 out="$work/$1" pod="billing-$1-$$" t
  mkdir -p "$out"; chmod 0755 "$work" "$out"
  local native_flag=(); [[ $form == native ]] && native_flag=(--native)
  t=$(date +%s)
  if ! (cd "$repo" && timeout 120 npx tsx test/pod/manifests.ts --out "$out" --image "$image" --pod-name "$pod" --chart "$chart" \
        --cert "$work/src/tls.crt" --key "$work/src/tls.key" "${native_flag[@]}") >"$out/manifests.log" 2>&1; then
    fail "[$form] render the chart, apply the drop-in with kustomize, validate" "$(tail -n 5 "$out/manifests.log")"
    return
  fi
  pass "[$form] chart rendered, drop-in applied to the legacy Deployment with kustomize, all objects valid ($(( $(date +%s) - t )) s)"

  pods+=("$pod")
  t=$(date +%s)
  if ! timeout 60 podman kube play --network none "$out/pod.yaml" >"$out/play.log" 2>&1; then
    fail "[$form] podman kube play" "$(tail -n 5 "$out/play.log")"; return
  fi
  local infra_pid
  infra_pid=$(ctr_state "$(podman pod inspect --format '{{.InfraContainerID}}' "$pod")" '{{.State.Pid}}')
  in_pod() { nsenter --target "$infra_pid" --net -- "$@"; }
  local admin https
  admin=$(fact "$out" adminPort); https=$(fact "$out" httpsPort)

  # The kubelet's probes, from the manifest (podman cannot run them: see manifests.ts).
  local probes_ok=1 n i kind path port
  n=$(fact "$out" probes.length)
  for (( i = 0; i < n; i++ )); do
    kind=$(fact "$out" "probes.$i.kind"); path=$(fact "$out" "probes.$i.path"); port=$(fact "$out" "probes.$i.port")
    if ! until_ok 30 in_pod curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port$path"; then
      probes_ok=; fail "[$form] $kind GET $path on $port" "$(podman logs "$pod-ktls-sidecar" 2>&1 | tail -n 5)"
    fi
  done
  [[ -n $probes_ok ]] && pass "[$form] pod running; startup, readiness and liveness probes answer 200 ($(( $(date +%s) - t )) s)"
  until_ok 10 bash -c "podman logs '$pod-web' 2>/dev/null | grep -q '\"listening\"'" || fail "[$form] app listening" "$(podman logs "$pod-web" 2>&1 | tail -n 3)"

  # TLS through the sidecar to the app; the certificate served is the Secret's.
  local curl_tls=(curl -sS --max-time 10 --cacert "$work/src/tls.crt" --resolve "billing.example:$https:127.0.0.1")
  local body got_fp
  body=$(in_pod "${curl_tls[@]}" "https://billing.example:$https/through-the-sidecar" 2>&1)
  got_fp=$(in_pod openssl s_client -connect "127.0.0.1:$https" -servername billing.example </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 2>/dev/null)
  if [[ "$body" == "billing-ok /through-the-sidecar" && "$got_fp" == "$want_fp" ]]; then
    pass "[$form] HTTPS client gets the app's answer through the sidecar; the certificate is the Secret's"
  else
    fail "[$form] HTTPS through the sidecar" "body: $body" "served: ${got_fp:-none}" "secret: $want_fp"
  fi

  # Every selector the chart rendered (Service, ...) must match the running pod's labels.
  local labels sel_out
  labels=$(podman pod inspect --format '{{json .Labels}}' "$pod")
  if sel_out=$(node -e '
      const f = require(process.argv[1]); const labels = JSON.parse(process.argv[2]); let bad = 0;
      for (const { object, selector } of f.selectors) {
        const miss = Object.entries(selector).filter(([k, v]) => labels[k] !== v);
        console.log(`${object} ${JSON.stringify(selector)}${miss.length ? " MISSES " + JSON.stringify(miss) : ""}`);
        if (miss.length) bad++;
      }
      if (!f.selectors.some((s) => s.object.startsWith("Service/"))) { console.log("no Service rendered"); bad++; }
      process.exit(bad ? 1 : 0);' "$out/facts.json" "$labels" 2>&1); then
    pass "[$form] selectors match the pod's labels $labels: $(tr '\n' ';' <<<"$sel_out")"
  else
    fail "[$form] selectors vs pod labels $labels" "$sel_out"
  fi

  # The flag flip: the ConfigMap `helm upgrade --set ktls.enabled=false` renders, written the way the
  # kubelet updates a ConfigMap volume (new directory, then an atomic rename of ..data).
  local before_start before_restarts after_start after_restarts flag cfg
  before_start=$(for c in web ktls-sidecar; do ctr_state "$pod-$c" '{{.State.StartedAt}}'; done)
  before_restarts=$(for c in web ktls-sidecar; do ctr_state "$pod-$c" '{{.RestartCount}}'; done | tr '\n' ' ')
  flag=$(in_pod curl -sS --max-time 2 "http://127.0.0.1:$admin/ktls" 2>&1)
  [[ "$flag" == *'"enabled":true'* ]] || fail "[$form] GET /ktls before the flip" "got: $flag"
  cfg=$(fact "$out" configDir)
  mkdir -m 0755 "$cfg/..2026_01_01_00_01_00.2"
  cp "$(fact "$out" flipDir)"/* "$cfg/..2026_01_01_00_01_00.2/"; chmod 0644 "$cfg/..2026_01_01_00_01_00.2"/*
  ln -sfn ..2026_01_01_00_01_00.2 "$cfg/..data_tmp" && mv -T "$cfg/..data_tmp" "$cfg/..data"
  t=$(now_ms)
  until_ok 30 bash -c "nsenter --target $infra_pid --net -- curl -sS --max-time 2 http://127.0.0.1:$admin/ktls 2>/dev/null | grep -q '\"enabled\":false'"
  flag=$(in_pod curl -sS --max-time 2 "http://127.0.0.1:$admin/ktls" 2>&1)
  local took=$(( $(now_ms) - t ))
  after_start=$(for c in web ktls-sidecar; do ctr_state "$pod-$c" '{{.State.StartedAt}}'; done)
  after_restarts=$(for c in web ktls-sidecar; do ctr_state "$pod-$c" '{{.RestartCount}}'; done | tr '\n' ' ')
  if [[ "$flag" == *'"enabled":false'* && "$before_start" == "$after_start" && "$before_restarts" == "0 0 " && "$after_restarts" == "0 0 " \
        && "$(fact "$out" patchUnchangedByFlip)" == true ]]; then
    pass "[$form] ConfigMap flip of ktls.enabled applied live in ${took} ms (GET /ktls: $flag); restarts 0, start times unchanged, pod template unchanged"
  else
    fail "[$form] ConfigMap flip" "GET /ktls: $flag" "restarts: $before_restarts -> $after_restarts" \
      "started: $(tr '\n' ' ' <<<"$before_start") -> $(tr '\n' ' ' <<<"$after_start")" \
      "pod template unchanged by the flip: $(fact "$out" patchUnchangedByFlip)"
  fi

  terminate "$form" "$out" "$pod"
}

# --- termination, as the kubelet does it ----------------------------------------------------------
# podman ignores preStop and stops every container at once, so the kubelet's sequence is played here
# from the manifest: regular containers all start their preStop at t0 and get SIGTERM when it returns;
# with a native sidecar the app containers go first and the sidecar's preStop/SIGTERM come only after
# every app container has exited. `podman stop -t REMAINING` is SIGTERM, then SIGKILL when the pod's
# terminationGracePeriodSeconds is used up (exit code 137), like the kubelet.
stop_container() {  # $1 = podman name, $2 = preStop (shell), $3 = file for the SIGTERM time, $4 = t0 (ms), $5 = grace (s)
  local left
  timeout "$5" bash -c "$2" >/dev/null 2>&1   # the kubelet bounds preStop by the grace period too
  left=$(( $5 - ($(now_ms) - $4) / 1000 )); (( left < 2 )) && left=2   # the kubelet's 2 s minimum
  { now_ms >"$3"; } 2>/dev/null   # quiet if an interrupted run already removed $work
  podman stop -t "$left" "$1" >/dev/null 2>&1
}

terminate() {  # $1 = form, $2 = facts dir, $3 = pod
  local form=$1 out=$2 pod=$3 grace n i t0 app_idx=() side_idx=() names=() shells=()
  grace=$(fact "$out" terminationGracePeriodSeconds); n=$(fact "$out" containers.length)
  for (( i = 0; i < n; i++ )); do
    if [[ $(fact "$out" "containers.$i.sidecar") == true ]]; then side_idx+=("$i"); else app_idx+=("$i"); fi
    names[i]=$(fact "$out" "containers.$i.podman"); shells[i]=$(fact "$out" "containers.$i.preStop.shell")
  done
  local side=${side_idx[0]} app=${app_idx[0]} in_pod_pid
  in_pod_pid=$(ctr_state "$(podman pod inspect --format '{{.InfraContainerID}}' "$pod")" '{{.State.Pid}}')
  local https; https=$(fact "$out" httpsPort)
  local curl_tls=(nsenter --target "$in_pod_pid" --net -- curl -sS --max-time 60 --cacert "$work/src/tls.crt"
    --resolve "billing.example:$https:127.0.0.1" -w '\n%{http_code}')

  # A request in flight when the first SIGTERM of the sequence arrives: it lasts the first preStop + 4 s
  # (the margin covers podman exec and stop latency on a busy machine).
  local first_prestop slow_ms
  if [[ $form == native ]]; then first_prestop=$(fact "$out" "containers.$app.preStop.seconds")
  else first_prestop=$(fact "$out" "containers.$side.preStop.seconds"); fi
  [[ $first_prestop =~ ^[0-9]+$ ]] || first_prestop=0
  slow_ms=$(( first_prestop * 1000 + 4000 ))
  ( "${curl_tls[@]}" "https://billing.example:$https/in-flight?ms=$slow_ms" >"$out/inflight.out" 2>&1; now_ms >"$out/inflight.done" ) &
  bg+=($!)
  until_ok 10 bash -c "podman logs '$pod-web' 2>/dev/null | grep -q '/in-flight'" || fail "[$form] in-flight request reached the app"

  t0=$(now_ms)
  local waiters=()
  if [[ $form == native ]]; then
    ( for i in "${app_idx[@]}"; do stop_container "${names[i]}" "${shells[i]}" "$out/sigterm-$i.ms" "$t0" "$grace" & done; wait
      for (( j = ${#side_idx[@]} - 1; j >= 0; j-- )); do i=${side_idx[j]}
        stop_container "${names[i]}" "${shells[i]}" "$out/sigterm-$i.ms" "$t0" "$grace"; done ) &
  else
    ( for i in "${app_idx[@]}" "${side_idx[@]}"; do stop_container "${names[i]}" "${shells[i]}" "$out/sigterm-$i.ms" "$t0" "$grace" & done; wait ) &
  fi
  waiters+=($!); bg+=($!)

  # A new connection one second into the shutdown: endpoints are still being updated, so clients still
  # arrive; the pod must serve them.
  sleep 1
  local late; late=$("${curl_tls[@]}" "https://billing.example:$https/late" 2>&1)

  local deadline=$(( $(date +%s) + grace + 10 ))
  while kill -0 "${waiters[0]}" 2>/dev/null && (( $(date +%s) < deadline )); do sleep 0.2; done
  if kill -0 "${waiters[0]}" 2>/dev/null; then fail "[$form] termination finished within the grace period + 10 s"; return; fi
  until_ok 5 test -s "$out/inflight.done"

  local app_exit side_exit app_code side_code app_term side_term inflight_done app_sig
  app_exit=$(ctr_state "$pod-web" '{{.State.FinishedAt.UnixMilli}}'); app_code=$(ctr_state "$pod-web" '{{.State.ExitCode}}')
  side_exit=$(ctr_state "$pod-ktls-sidecar" '{{.State.FinishedAt.UnixMilli}}'); side_code=$(ctr_state "$pod-ktls-sidecar" '{{.State.ExitCode}}')
  app_term=$(cat "$out/sigterm-$app.ms" 2>/dev/null); side_term=$(cat "$out/sigterm-$side.ms" 2>/dev/null)
  inflight_done=$(cat "$out/inflight.done" 2>/dev/null)
  app_sig=$(podman logs "$pod-web" 2>/dev/null | sed -n 's/.*"event":"sigterm","t":\([0-9]*\).*/\1/p' | head -n1)
  rel() { [[ -n $1 ]] && printf '+%d.%01d s' $(( ($1 - t0) / 1000 )) $(( ($1 - t0) % 1000 / 100 )) || printf 'never'; }
  local timeline="sidecar SIGTERM $(rel "$side_term"), exit $(rel "$side_exit") (code $side_code); app SIGTERM $(rel "$app_term"), exit $(rel "$app_exit") (code $app_code); in-flight done $(rel "$inflight_done"); grace ${grace} s"
  say "# [$form] $timeline"

  [[ "$(cat "$out/inflight.out")" == $'billing-ok /in-flight\n\n200' ]] \
    && pass "[$form] the request in flight at SIGTERM is answered in full (200)" \
    || fail "[$form] in-flight request" "got: $(tr '\n' ' ' <<<"$(cat "$out/inflight.out")")"
  [[ "$late" == $'billing-ok /late\n\n200' ]] \
    && pass "[$form] a new connection 1 s into the shutdown is served (200)" \
    || fail "[$form] new connection during the shutdown" "got: $(tr '\n' ' ' <<<"$late")" "$(podman logs "$pod-ktls-sidecar" 2>&1 | tail -n 3)"
  [[ "$app_code" == 0 && "$side_code" == 0 ]] \
    && pass "[$form] both containers exit 0 within the grace period (no SIGKILL)" \
    || fail "[$form] exit codes (137 = SIGKILL at the end of the grace period)" "$timeline"
  if [[ $form == native ]]; then
    [[ -n "$side_term" && -n "$app_exit" && "$side_term" -ge "$app_exit" && "$side_exit" -ge "$inflight_done" ]] \
      && pass "[$form] the sidecar is stopped last: SIGTERM only after the app exited" \
      || fail "[$form] native sidecar order" "$timeline"
  else
    [[ -n "$app_sig" && -n "$side_exit" && "$app_sig" -ge "$side_exit" && "$side_term" -le "$inflight_done" ]] \
      && pass "[$form] the sidecar drained the in-flight request after its SIGTERM, and the app got SIGTERM only after the sidecar exited" \
      || fail "[$form] shutdown order (the app must outlive the sidecar's drain)" "$timeline" "app saw SIGTERM $(rel "$app_sig")"
  fi
  podman pod rm --ignore -f -t 0 "$pod" >/dev/null 2>&1
}

run_form regular
run_form native

summary
[[ $failed -eq 0 ]]
