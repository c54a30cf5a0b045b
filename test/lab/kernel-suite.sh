#!/bin/bash
# test/lab/kernel-suite.sh [TEST_FILE...]   (npm run test:kernel [-- TEST_FILE...])
#
# Runs the kernel tests (every test/kernel/**/*.test.ts, or the files given) inside the
# lab VM, once per kernel, and exits non-zero if anything failed or a VM did not boot.
#   1. test/lab/setup.sh: host tools (qemu, static busybox, ...) from apt if missing
#   2. fetch-kernel.sh: each kernel, downloaded + unpacked into the lab cache on first use
#   3. build-tests.mjs: tsc -> node_modules/.cache/ktls-sidecar-lab/build (+ tap bundled
#      into one module), on the host
#   4. run-in-vm.sh --kernel K -- node test/lab/guest-run.mjs ...: per kernel, in turn
# Each kernel's TAP stream is printed live and kept in .lab/results/<spec>.tap; the
# last lines are a per-kernel result line and a summary:
#   kernel-lab: RESULT kernel=<spec> release=<uname -r> total=N pass=N fail=N skip=N rc=N boot=<s> suite=<s> wall=<s>
#   kernel-lab: <K> kernels, N passed, N failed, N skipped (<s> s)
# and the RESULT lines are also written to $KTLS_LAB_SUMMARY (default .lab/results/summary.txt).
#
# Environment:
#   KTLS_LAB_KERNELS       kernels to run, in order (default "7.x 6.1"; see lib.sh for specs)
#   KTLS_LAB_SUITE_TIMEOUT seconds per kernel before its VM is killed (default 900)
#   KTLS_LAB_FILE_TIMEOUT  seconds per test file inside the VM (default 300)
#   KTLS_LAB_JOBS          test files run in parallel in the VM (default: its vCPUs)
#   KTLS_LAB_SUMMARY       where the RESULT lines go
#   and everything run-in-vm.sh and fetch-kernel.sh read (KTLS_LAB_CACHE, KTLS_LAB_SMP, ...)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
LAB_LOG_PREFIX=kernel-lab

KERNELS=${KTLS_LAB_KERNELS:-$LAB_DEFAULT_KERNELS}
KERNELS=${KERNELS//,/ }
RESULTS=$LAB_REPO/.lab/results
SUMMARY=${KTLS_LAB_SUMMARY:-$RESULTS/summary.txt}
mkdir -p "$RESULTS" "$(dirname "$SUMMARY")" || exit 125
: > "$SUMMARY"
cd "$LAB_REPO" || exit 125
T0=$(lab_now)

# ---- 1-2: tools and kernels (before the build: a missing kernel is the likelier failure)
"$LAB_DIR/setup.sh" || { lab_log "FAILED: host setup"; exit 125; }
declare -A RELEASE
for k in $KERNELS; do
	if [ -d "$k" ]; then
		RELEASE[$k]=$k
	else
		RELEASE[$k]=$("$LAB_DIR/fetch-kernel.sh" "$k") || { lab_log "FAILED: could not fetch kernel '$k'"; exit 125; }
	fi
done
T1=$(lab_now)

# ---- 3: compile on the host ------------------------------------------------------------
mapfile -t FILES < <(node "$LAB_DIR/build-tests.mjs" "$@") || true
[ ${#FILES[@]} -gt 0 ] || { lab_log "FAILED: build-tests.mjs produced no test files"; exit 1; }
T2=$(lab_now)
lab_log "setup+kernels $(lab_elapsed "$T0" "$T1") s, build $(lab_elapsed "$T1" "$T2") s; ${#FILES[@]} test files on: $KERNELS"

# ---- 4: one VM per kernel ------------------------------------------------------------------
sum_pass=0 sum_fail=0 sum_skip=0 worst=0
for k in $KERNELS; do
	name=$(basename "$k")
	log=$RESULTS/$name.tap
	lab_log "==== kernel $k (${RELEASE[$k]}) ===="
	ks=$(lab_now)
	rm -f "$log.timing"
	# stdout (the TAP) to the terminal and the log; a pipeline, so the log is complete
	# when we read it. stderr passes through untouched.
	KTLS_LAB_TIMEOUT=${KTLS_LAB_SUITE_TIMEOUT:-900} KTLS_LAB_STREAM=1 KTLS_LAB_TIMING=1 KTLS_LAB_TIMING_FILE=$log.timing \
		"$LAB_DIR/run-in-vm.sh" --kernel "$k" -- node test/lab/guest-run.mjs "${FILES[@]}" | tee "$log"
	rc=${PIPESTATUS[0]}
	# tap's summary line, as guest-run.mjs prints it: "# { total: N, pass: N, fail: N, skip: N }"
	line=$(grep -E '^# \{ .*\}\s*$' "$log" | tail -1)
	count() { sed -nE "s/.*[{ ]$1: ([0-9]+).*/\1/p" <<<"$line"; }
	total=$(count total) pass=$(count pass) fail=$(count fail) skip=$(count skip)
	total=${total:-0} pass=${pass:-0} fail=${fail:-0} skip=${skip:-0}
	if [ -z "$line" ] || { [ $rc -ne 0 ] && [ "$fail" = 0 ]; }; then
		# no summary (the VM did not boot, timed out, or the runner died): one failure
		fail=$((fail + 1)) total=$((total + 1))
		lab_log "kernel $k: no complete test run (run-in-vm rc=$rc; 124 = timeout, 125 = VM/lab failure)"
	fi
	boot=$(sed -nE 's/.*boot-to-command ([0-9.?]+) s.*/\1/p' "$log.timing" 2>/dev/null | tail -1)
	suite=$(sed -nE 's/.*, command ([0-9.?]+) s.*/\1/p' "$log.timing" 2>/dev/null | tail -1)
	result="RESULT kernel=$k release=${RELEASE[$k]} total=$total pass=$pass fail=$fail skip=$skip rc=$rc boot=${boot:-?} suite=${suite:-?} wall=$(lab_elapsed "$ks")"
	echo "$result" >> "$SUMMARY"
	results+=("$result")
	sum_pass=$((sum_pass + pass)) sum_fail=$((sum_fail + fail)) sum_skip=$((sum_skip + skip))
	[ $rc -ne 0 ] && [ $worst -eq 0 ] && worst=$rc
	[ "$fail" != 0 ] && [ $worst -eq 0 ] && worst=1
done

n=$(wc -w <<<"$KERNELS")
for r in "${results[@]}"; do echo "kernel-lab: $r"; done
echo "kernel-lab: $n kernels, $sum_pass passed, $sum_fail failed, $sum_skip skipped ($(lab_elapsed "$T0") s)"
exit $worst
