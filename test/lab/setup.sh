#!/bin/bash
# test/lab/setup.sh: installs the host tools the kernel lab needs (Debian/Ubuntu).
#
# Idempotent and quiet when nothing is missing: it only runs apt-get (update +
# install) for tools that are not there. apt is serialized with
# `flock /tmp/apt.lock`, so several jobs can provision the same machine at once.
# Kernels are NOT installed here: fetch-kernel.sh downloads and unpacks them
# into the lab cache without touching the system's package database.
#
# Needs root (or sudo) only if something is missing. Exit 0 when everything is
# present afterwards.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
LAB_LOG_PREFIX=lab-setup

missing() {
	local pkgs=()
	command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
	# The initramfs shell must be a STATIC busybox (the "busybox" package is dynamic).
	if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then pkgs+=(busybox-static); fi
	command -v modprobe >/dev/null || command -v /sbin/modprobe >/dev/null || pkgs+=(kmod)
	command -v cpio >/dev/null || pkgs+=(cpio)
	# Debian's 6.1 bzImage is xz-compressed, its 7.x bzImage zstd; the lab
	# extracts the vmlinux once (PVH boot, ~3 s faster per boot under TCG).
	command -v xz >/dev/null || pkgs+=(xz-utils)
	command -v zstd >/dev/null || pkgs+=(zstd)
	command -v readelf >/dev/null || pkgs+=(binutils)
	command -v timeout >/dev/null || pkgs+=(coreutils)
	command -v flock >/dev/null || pkgs+=(util-linux)
	echo "${pkgs[*]}"
}

need=$(missing)
if [ -z "$need" ]; then
	[ "${1:-}" = -q ] || lab_log "host tools present"
	exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { lab_log "missing: $need; run as root: apt-get install $need"; exit 1; }
	SUDO=(sudo)
fi
t0=$(lab_now)
lab_log "installing: $need"
# Re-check under the lock: another job may have installed them meanwhile.
"${SUDO[@]}" flock -w 900 /tmp/apt.lock bash -c '
	set -e
	export DEBIAN_FRONTEND=noninteractive
	need=$1
	[ -n "$need" ] || exit 0
	apt-get -o DPkg::Lock::Timeout=300 -qq update
	apt-get -o DPkg::Lock::Timeout=300 -qq install -y --no-install-recommends $need
' _ "$need"
need=$(missing)
[ -z "$need" ] || { lab_log "still missing after apt-get: $need"; exit 1; }
lab_log "installed in $(lab_elapsed "$t0") s"
