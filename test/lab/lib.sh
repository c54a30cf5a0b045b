# test/lab/lib.sh: shared by the kernel lab scripts (sourced, not run).
#
# The lab keeps everything it downloads or builds OUTSIDE the checkout, so that
# CI runs from fresh clones reuse it and the checkout stays clean:
#   $LAB_CACHE/kernels/<kver>/root     Debian kernel packages unpacked with dpkg -x
#   $LAB_CACHE/kernels/resolved-<suite> which kernel a suite resolved to (no network next time)
#   $LAB_CACHE/boot/<kver>/            extracted PVH vmlinux + initramfs for that kernel
# Only compiled tests go into the checkout, under .lab/ (git-ignored).

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_REPO=$(cd "$LAB_DIR/../.." && pwd)
LAB_CACHE=${KTLS_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ktls-sidecar-lab}

# Kernel specs users can pass (KTLS_LAB_KERNEL / KTLS_LAB_KERNELS / --kernel):
#   7.x (aliases: latest, rekey, trixie-backports)
#       newest linux-image-amd64 of trixie-backports; must be >= 6.14 (TLS 1.3
#       rekey in kTLS); if that suite ever falls behind, trixie then sid are tried
#   6.1 (aliases: bookworm, debian12)
#       Debian 12's own linux-image-amd64 (6.1.x; kTLS without rekey)
#   <suite>   any other Debian suite name (trixie, sid, bookworm-backports, ...)
#   <dir>     a kernel root you unpacked yourself (contains
#             usr/lib/modules/<kver>/vmlinuz or boot/vmlinuz-<kver>)
LAB_DEFAULT_KERNEL=7.x
LAB_DEFAULT_KERNELS="7.x 6.1"

# spec -> "SUITE MINVER FALLBACK_SUITES..." (MINVER 0 = any)
lab_spec_suites() {
	case "$1" in
	7.x | latest | rekey | trixie-backports) echo "trixie-backports 6.14 trixie sid" ;;
	6.1 | bookworm | debian12) echo "bookworm 6.1" ;;
	*/* | .*) return 1 ;; # a path, not a suite
	*) echo "$1 0" ;;
	esac
}

lab_log() { echo "${LAB_LOG_PREFIX:-kernel-lab}: $*" >&2; }

# seconds since the epoch, with fractions (for timings)
lab_now() { date +%s.%N; }
lab_elapsed() { awk -v a="$1" -v b="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.1f", b - a }'; }
