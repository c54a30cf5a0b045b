#!/bin/bash
# test/lab/run-in-vm.sh [options] [--] COMMAND [ARGS...]
#
# Boots a Debian kernel that has real kernel TLS under QEMU (TCG: no KVM
# needed) and runs COMMAND inside it, in the same working directory and with
# the same exported environment. COMMAND's stdout and stderr come back on
# stdout and stderr (live), and its exit code becomes ours.
#
# The guest's root is the HOST's root filesystem, shared read-only over
# virtio-9p under a tmpfs overlay: the checkout, node, node_modules and the
# native addon are all visible at their host paths; writes in the guest work
# but vanish at poweroff ($KTLS_LAB_OUT and --rw DIRs excepted). There is no
# network device except lo. The command runs as root with stdin /dev/null.
#
# Options:
#   --kernel SPEC  which kernel (default $KTLS_LAB_KERNEL, else 7.x):
#                  7.x | 6.1 | <Debian suite> | <dir of an unpacked kernel>
#                  (see lib.sh); fetched into the lab cache on first use
#   --rw DIR       share host DIR read-write at the same path (repeatable)
#   --out DIR      use DIR as the writable share (kept) instead of a temp dir
#   -v             print the guest console (kernel log) and qemu command at the end
#   -h             help
# Inside the guest these are set: KTLS_LAB=1, KTLS_LAB_KERNEL (the spec),
# KTLS_LAB_KVER (the release the lab booted), KTLS_LAB_OUT (a writable host dir).
#
# Environment:
#   KTLS_LAB_KERNEL   default kernel spec (7.x)
#   KTLS_LAB_TIMEOUT  seconds before the VM is killed (default 1800; 0 = none)
#                     -> exit 124, with the output so far
#   KTLS_LAB_SMP      vCPUs (default 2)        KTLS_LAB_MEM   guest RAM (default 2G)
#   KTLS_LAB_CPU      qemu -cpu (default max: TCG emulates AES-NI, PCLMULQDQ, AVX2)
#   KTLS_LAB_ACCEL    tcg (default) | kvm (kvm only where /dev/kvm really works)
#   KTLS_LAB_QEMU_ARGS extra qemu arguments (split on whitespace), e.g. "-icount shift=3,sleep=off":
#                     guest time then counts emulated instructions, so CPU times measured in the
#                     guest do not depend on the host's load (benchmarks); slower (one TCG thread)
#   KTLS_LAB_STREAM   1 (default): print output live; 0: after the VM stopped
#   KTLS_LAB_TIMING   1 (default): one "run-in-vm: timing:" line on stderr (and
#                     appended to $KTLS_LAB_TIMING_FILE if set)
#   KTLS_LAB_PVH      1 (default): boot the extracted vmlinux; 0: the bzImage (~3 s slower)
#   KTLS_LAB_PRELOAD  modules loaded before the command (default aesni_intel,
#                     as udev would on real hardware; "" for none)
#   KTLS_LAB_APPEND   replaces "quiet loglevel=4" on the kernel command line
#   KTLS_LAB_CRYPTO_SELFTESTS=1  keep the kernel's crypto self-tests (slower)
#   KTLS_LAB_CACHE    lab cache (default ${XDG_CACHE_HOME:-~/.cache}/ktls-sidecar-lab)
# Exit code: COMMAND's; 124 on timeout; 125 if the lab or the VM failed
# before COMMAND reported an exit code (the console tail is printed then).
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
LAB_LOG_PREFIX=run-in-vm

die() { lab_log "$*"; exit 125; }
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

SPEC=${KTLS_LAB_KERNEL:-$LAB_DEFAULT_KERNEL}
RW_DIRS=() OUT_DIR="" VERBOSE=0
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) [ $# -ge 2 ] || die "--kernel needs a spec"; SPEC=$2; shift 2 ;;
	--kernel=*) SPEC=${1#--kernel=}; shift ;;
	--rw) [ $# -ge 2 ] || die "--rw needs a dir"; RW_DIRS+=("$(cd "$2" && pwd -P)") || die "no dir $2"; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a dir"; mkdir -p "$2" && OUT_DIR=$(cd "$2" && pwd -P) || die "bad --out $2"; shift 2 ;;
	-v) VERBOSE=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	-*) die "unknown option $1 (put -- before the command)" ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { usage >&2; exit 125; }

SMP=${KTLS_LAB_SMP:-2}
MEM=${KTLS_LAB_MEM:-2G}
ACCEL=${KTLS_LAB_ACCEL:-tcg}
TIMEOUT=${KTLS_LAB_TIMEOUT:-1800}
STREAM=${KTLS_LAB_STREAM:-1}

"$LAB_DIR/setup.sh" -q || die "host tools missing (test/lab/setup.sh failed)"

# ---- kernel ---------------------------------------------------------------------------
if [ -d "$SPEC" ]; then
	KROOT=$SPEC
else
	KROOT=$("$LAB_DIR/fetch-kernel.sh" --root "$SPEC") || die "could not fetch kernel '$SPEC'"
fi
KROOT=$(cd "$KROOT" && pwd -P) || die "bad kernel root $KROOT"
# <cache>/kernels/<kver> holds the root in root/
[ ! -d "$KROOT/usr" ] && [ -d "$KROOT/root/usr" ] && KROOT=$KROOT/root
moddir_of() { # kver -> physical path of its modules dir in KROOT
	local d
	for d in "$KROOT/usr/lib/modules/$1" "$KROOT/lib/modules/$1"; do
		[ -d "$d" ] && { (cd "$d" && pwd -P); return; }
	done
	return 1
}
image_of() { # kver -> its vmlinuz (7.x: in the modules dir; 6.1: in boot/)
	local d
	d=$(moddir_of "$1") || return 1
	if [ -f "$d/vmlinuz" ]; then echo "$d/vmlinuz"
	elif [ -f "$KROOT/boot/vmlinuz-$1" ]; then echo "$KROOT/boot/vmlinuz-$1"
	else return 1; fi
}
pick_kver() { # newest release in KROOT that has an image
	local v
	for v in $( (ls -1 "$KROOT/usr/lib/modules" "$KROOT/lib/modules" 2>/dev/null) | grep -v '^/\|:$\|^$' | sort -urV); do
		image_of "$v" >/dev/null && { echo "$v"; return 0; }
	done
	return 1
}
KVER=$(pick_kver) || die "no <kver> with a vmlinuz under $KROOT/usr/lib/modules"
KERNEL=$(image_of "$KVER") || die "no vmlinuz for $KVER in $KROOT"
MODDIR=$(moddir_of "$KVER") || die "no modules dir for $KVER in $KROOT"
[ -s "$MODDIR/modules.dep" ] || die "$MODDIR has no modules.dep (run depmod -b $KROOT $KVER)"
# In the guest the host root is /, so the kernel's modules dir is bind-mounted
# at the host's /lib/modules/<kver> (resolved: /lib is usr/lib on merged /usr).
GUEST_MODDST=$(readlink -f /lib/modules 2>/dev/null || echo /lib/modules)/$KVER

# ---- PVH vmlinux + initramfs (cached per kernel) --------------------------------------
BOOT=$LAB_CACHE/boot/$KVER
mkdir -p "$BOOT/modroot/lib/modules" "$BOOT/modroot/usr/lib/modules" || die "cannot create $BOOT"
exec 7>"$BOOT/.lock"
flock -w 600 7 || die "timed out waiting for $BOOT/.lock"
# kmod 30 (bookworm) looks in <dir>/lib/modules, newer kmod in <dir>/usr/lib/modules
ln -sfn "$MODDIR" "$BOOT/modroot/lib/modules/$KVER"
ln -sfn "$MODDIR" "$BOOT/modroot/usr/lib/modules/$KVER"
MODPROBE=$(command -v modprobe || echo /sbin/modprobe)

# Booting the bzImage makes the guest decompress ~60 MB (xz for 6.1, zstd for
# 7.x) under TCG: ~3 s per boot. Debian kernels have CONFIG_PVH=y, so the ELF
# vmlinux is extracted once and qemu starts it at its PVH entry point.
extract_vmlinux() { # bzImage out -> 0 if out is an ELF with a PVH entry note
	local img=$1 out=$2 pos magic cmd i
	# $'...' stops at a NUL byte, so the XZ magic is matched without its trailing \0
	local magics=($'\xfd7zXZ' $'\x1f\x8b\x08' $'\x28\xb5\x2f\xfd') cmds=(xz gzip zstd)
	for i in 0 1 2; do
		magic=${magics[$i]} cmd="${cmds[$i]} -dc"
		command -v "${cmds[$i]}" >/dev/null || continue
		for pos in $(LC_ALL=C grep -abo "$magic" "$img" 2>/dev/null | cut -d: -f1 | head -5); do
			tail -c +$((pos + 1)) "$img" | $cmd > "$out.tmp.$$" 2>/dev/null
			if [ "$(head -c 4 "$out.tmp.$$" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] &&
				readelf -n "$out.tmp.$$" 2>/dev/null | grep -Eq 'Unknown note type: \(0x00000012\)|PHYS32_ENTRY'; then
				mv "$out.tmp.$$" "$out"; return 0
			fi
		done
	done
	rm -f "$out.tmp.$$"; return 1
}
# What a cache entry was built from (an unpacked .deb keeps the package's
# mtimes, so comparing mtimes alone would miss a different kernel).
KSRC="$(readlink -f "$KERNEL") $(stat -Lc '%s %Y' "$KERNEL")"
BOOT_IMG=$KERNEL
if [ "${KTLS_LAB_PVH:-1}" = 1 ]; then
	if [ ! -s "$BOOT/vmlinux" ] || [ "$(cat "$BOOT/vmlinux.src" 2>/dev/null)" != "$KSRC" ]; then
		rm -f "$BOOT/vmlinux"
		if extract_vmlinux "$KERNEL" "$BOOT/vmlinux"; then
			echo "$KSRC" > "$BOOT/vmlinux.src"
		else
			lab_log "could not extract a PVH vmlinux from $KERNEL; booting the bzImage (slower)"
		fi
	fi
	[ -s "$BOOT/vmlinux" ] && BOOT_IMG=$BOOT/vmlinux
fi
INITRD=$BOOT/initramfs.cpio.gz
MSRC="$MODDIR $(stat -Lc '%s %Y' "$MODDIR/modules.dep") $(cksum < "$LAB_DIR/init.sh")"
if [ ! -s "$INITRD" ] || [ "$(cat "$BOOT/initramfs.src" 2>/dev/null)" != "$MSRC" ]; then
	[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox missing or not static (apt-get install busybox-static)"
	stage=$(mktemp -d) || die mktemp
	mkdir -p "$stage"/{bin,modules,proc,sys,dev,tmp}
	cp /bin/busybox "$stage/bin/busybox"
	cp "$LAB_DIR/init.sh" "$stage/init"
	chmod 755 "$stage/init" "$stage/bin/busybox"
	: > "$stage/modules/order"
	# Built-in modules (virtio_pci on 7.x) print "builtin ..." and are skipped.
	for m in virtio_pci 9pnet_virtio 9p overlay; do
		"$MODPROBE" -d "$BOOT/modroot" -S "$KVER" --show-depends "$m" || lab_log "modprobe --show-depends $m failed for $KVER"
	done | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' | while read -r ko; do
		# busybox insmod cannot read compressed modules: store them plain
		b=$(basename "$ko")
		case "$b" in
		*.ko.xz) xz -dc "$ko" > "$stage/modules/${b%.xz}"; b=${b%.xz} ;;
		*.ko.zst) zstd -dcq "$ko" > "$stage/modules/${b%.zst}"; b=${b%.zst} ;;
		*.ko.gz) gzip -dc "$ko" > "$stage/modules/${b%.gz}"; b=${b%.gz} ;;
		*) cp "$ko" "$stage/modules/" ;;
		esac
		echo "$b" >> "$stage/modules/order"
	done
	[ -s "$stage/modules/order" ] || { rm -rf "$stage"; die "found no virtio/9p modules for $KVER in $MODDIR"; }
	(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp.$$" && mv "$INITRD.tmp.$$" "$INITRD" ||
		{ rm -rf "$stage"; die "building the initramfs failed"; }
	echo "$MSRC" > "$BOOT/initramfs.src"
	rm -rf "$stage"
fi
flock -u 7

# ---- per-run share ---------------------------------------------------------------------
if [ -n "$OUT_DIR" ]; then
	SHARE=$OUT_DIR
	rm -f "$SHARE"/{rc,stdout,stderr,started,guest-times,console.log,cmd.sh,ctl.sh,qemu.out}
else
	SHARE=$(mktemp -d "${TMPDIR:-/tmp}/ktls-lab.XXXXXX") || die mktemp
	SHARE=$(cd "$SHARE" && pwd -P)
fi
QPID="" TAIL_PIDS=""
cleanup() {
	# Leaving early (signal, error): stop qemu; a no-op after it exited.
	[ -n "$QPID" ] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
	[ -n "$TAIL_PIDS" ] && kill $TAIL_PIDS 2>/dev/null
	[ -n "$OUT_DIR" ] || rm -rf "$SHARE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

sq() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }
{
	echo "SHARE_PATH=$(sq "$SHARE")"
	echo "PRELOAD=$(sq "${KTLS_LAB_PRELOAD-aesni_intel}")"
	echo "KMOD_SRC=$(sq "$MODDIR")"
	echo "KMOD_DST=$(sq "$GUEST_MODDST")"
	echo "RW_COUNT=${#RW_DIRS[@]}"
	for i in "${!RW_DIRS[@]}"; do echo "RW_PATH_$i=$(sq "${RW_DIRS[$i]}")"; done
} > "$SHARE/ctl.sh"
{
	echo ': > '"$(sq "$SHARE/started")"
	# The caller's environment, minus shell-internal variables.
	export -p | grep -Ev '^declare -[a-zA-Z-]* (PWD|OLDPWD|SHLVL|_)(=|$)'
	echo "export KTLS_LAB=1 KTLS_LAB_KERNEL=$(sq "$SPEC") KTLS_LAB_KVER=$(sq "$KVER") KTLS_LAB_OUT=$(sq "$SHARE")"
	echo "cd -- $(sq "$PWD") || exit 125"
	printf 'exec'; printf ' %q' "$@"; echo
} > "$SHARE/cmd.sh"

# ---- qemu ------------------------------------------------------------------------------
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (test/lab/setup.sh)"
qesc() { printf %s "${1//,/,,}"; } # a comma inside a qemu option value is doubled
# no_timer_check: under TCG the IO-APIC timer check sometimes fails on a busy host and the
# kernel panics ("IO-APIC + timer doesn't work!"); the check only guards broken real hardware.
APPEND="console=ttyS0 ${KTLS_LAB_APPEND:-quiet loglevel=4} panic=-1 oops=panic mitigations=off no_timer_check"
# Crypto self-tests cost ~2 s under TCG the first time gcm(aes) is set up and
# ~4 s for aesni_intel; the algorithms are the same without them.
[ "${KTLS_LAB_CRYPTO_SELFTESTS:-0}" = 1 ] || APPEND="$APPEND cryptomgr.notests"
if [ "$ACCEL" = tcg ]; then CPU=${KTLS_LAB_CPU:-max}; else CPU=${KTLS_LAB_CPU:-host}; fi
# -M pc: microvm hangs calibrating the TSC under TCG. -nic none: only lo.
QEMU=(qemu-system-x86_64 -name ktls-lab -accel "$ACCEL" -cpu "$CPU" -M pc -smp "$SMP" -m "$MEM"
	-kernel "$BOOT_IMG" -initrd "$INITRD" -append "$APPEND"
	-display none -monitor none -serial "file:$SHARE/console.log"
	-no-reboot -nic none -nodefaults
	# multidevs=remap: the host / spans several filesystems (inode collisions otherwise)
	-fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"
	-device "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"
	-fsdev "local,id=vmshare,path=$(qesc "$SHARE"),security_model=none,multidevs=remap"
	-device "virtio-9p-pci,fsdev=vmshare,mount_tag=vmshare")
# shellcheck disable=SC2206 # word splitting wanted
[ -z "${KTLS_LAB_QEMU_ARGS:-}" ] || QEMU+=(${KTLS_LAB_QEMU_ARGS})
for i in "${!RW_DIRS[@]}"; do
	QEMU+=(-fsdev "local,id=rw$i,path=$(qesc "${RW_DIRS[$i]}"),security_model=none,multidevs=remap"
		-device "virtio-9p-pci,fsdev=rw$i,mount_tag=rw$i")
done

# A boot that dies before the command starts (a kernel panic under emulation, seen rarely) is
# retried: it says nothing about the code under test. A command that started is never re-run.
BOOT_TRIES=${KTLS_LAB_BOOT_TRIES:-3}
attempt=1
while :; do
	[ "$STREAM" = 1 ] && : > "$SHARE/stdout" && : > "$SHARE/stderr"
	t0=$(lab_now)
	if [ "$TIMEOUT" != 0 ]; then
		timeout -k 5 "$TIMEOUT" "${QEMU[@]}" < /dev/null > "$SHARE/qemu.out" 2>&1 &
	else
		"${QEMU[@]}" < /dev/null > "$SHARE/qemu.out" 2>&1 &
	fi
	QPID=$!
	if [ "$STREAM" = 1 ]; then
		tail -n +1 -s 0.2 -f --pid=$QPID "$SHARE/stdout" & TAIL_PIDS=$!
		tail -n +1 -s 0.2 -f --pid=$QPID "$SHARE/stderr" >&2 & TAIL_PIDS="$TAIL_PIDS $!"
	fi
	wait $QPID
	qrc=$?
	QPID=""
	t1=$(lab_now)
	if [ -n "$TAIL_PIDS" ]; then wait $TAIL_PIDS 2>/dev/null; TAIL_PIDS=""; fi
	if [ ! -e "$SHARE/started" ] && [ ! -s "$SHARE/rc" ] && [ "$attempt" -lt "$BOOT_TRIES" ] &&
		! { [ "$TIMEOUT" != 0 ] && { [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; }; }; then
		lab_log "boot $attempt of kernel $KVER failed before the command started (qemu rc=$qrc); console tail:"
		tail -n 5 "$SHARE/console.log" >&2 2>/dev/null
		rm -f "$SHARE"/{console.log,qemu.out,stdout,stderr,guest-times}
		attempt=$((attempt + 1))
		continue
	fi
	break
done
if [ "$STREAM" != 1 ]; then
	[ -f "$SHARE/stdout" ] && cat "$SHARE/stdout"
	[ -f "$SHARE/stderr" ] && cat "$SHARE/stderr" >&2
fi
if [ "$VERBOSE" = 1 ]; then
	{
		echo "----- guest console -----"; cat "$SHARE/console.log"
		echo "----- qemu command -----"; printf '%q ' "${QEMU[@]}"; echo
		echo "----- qemu output (rc=$qrc) -----"; cat "$SHARE/qemu.out"
	} >&2
fi
if [ "${KTLS_LAB_TIMING:-1}" = 1 ]; then
	# The 9p server creates `started` and `rc` on the host, so their mtimes are
	# host-clock timestamps of command start and end: no polling needed.
	ts=$(stat -c %.9Y "$SHARE/started" 2>/dev/null || echo "")
	te=$(stat -c %.9Y "$SHARE/rc" 2>/dev/null || echo "")
	timing=$(awk -v k="$KVER" -v t0="$t0" -v ts="$ts" -v te="$te" -v t1="$t1" 'BEGIN {
		printf "run-in-vm: timing: kernel %s: boot-to-command %s s, command %s s, total %.2f s\n", k,
			(ts == "" ? "?" : sprintf("%.2f", ts - t0)), (ts == "" || te == "" ? "?" : sprintf("%.2f", te - ts)), t1 - t0 }')
	echo "$timing" >&2
	[ -z "${KTLS_LAB_TIMING_FILE:-}" ] || echo "$timing" >> "$KTLS_LAB_TIMING_FILE"
fi
if [ "$TIMEOUT" != 0 ] && { [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; }; then
	lab_log "TIMEOUT: the VM was killed after ${TIMEOUT}s (KTLS_LAB_TIMEOUT)"
	exit 124
fi
if [ -s "$SHARE/rc" ]; then
	exit "$(cat "$SHARE/rc")"
fi
lab_log "the VM stopped (qemu rc=$qrc) before the command reported an exit code; console tail:"
tail -n 40 "$SHARE/console.log" >&2 2>/dev/null
cat "$SHARE/qemu.out" >&2 2>/dev/null
exit 125
