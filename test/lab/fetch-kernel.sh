#!/bin/bash
# test/lab/fetch-kernel.sh [--refresh] [--root] [SPEC]
#
# Downloads (does NOT install) a Debian generic amd64 kernel and unpacks it
# into the lab cache for run-in-vm.sh. Prints the kernel release (uname -r,
# e.g. 7.3.4+deb13-amd64) on stdout, or with --root the unpacked root dir;
# progress goes to stderr.
#
#   SPEC       7.x (default; newest of trixie-backports, must be >= 6.14),
#              6.1 (Debian 12's own kernel), or a Debian suite name; see lib.sh
#   --refresh  ask the archive again for the newest kernel of the suite
#   --root     print the unpacked root dir instead of the release
#
# How: the metapackage linux-image-amd64 of the suite -> its dependency
# linux-image-<kver> -> that package plus its own dependencies named
# *-<kver> (Debian's 7.x kernels are split into linux-binary-, linux-modules-
# and linux-base-<kver>; 6.1 has everything in linux-image-<kver>). They are
# fetched with `apt-get download` under a PRIVATE apt state (sources list,
# lists, dpkg status, cache: all in a temp dir removed at exit; the system's
# lists, dpkg database, /boot and /lib/modules are neither used nor changed),
# unpacked with `dpkg -x`, given a lib -> usr/lib link (bookworm's kmod looks
# in <root>/lib/modules) and indexed with `depmod -b`.
#
# The archive is NOT configured anywhere in the repository: its URI and
# keyring are read at run time from this machine's apt sources (the entry
# whose suites include the system's own codename, e.g. bookworm).
#
# A kernel resolved before is reused with no network access at all, unless
# --refresh is given or the resolution is older than KTLS_LAB_REFRESH_DAYS
# (default 7; 0 = never refresh automatically). A failed automatic refresh
# falls back to the cached kernel with a warning.
#
# Environment:
#   KTLS_LAB_CACHE        cache root (default ${XDG_CACHE_HOME:-~/.cache}/ktls-sidecar-lab)
#   KTLS_LAB_REFRESH_DAYS see above
#   KTLS_LAB_APT_URI      archive URI to use instead of the system's one
#   KTLS_LAB_APT_KEYRING  keyring for it (default: the Signed-By of that entry)
#   KTLS_LAB_KEEP_DEBS=1  keep the downloaded .deb files in <cache>/kernels/<kver>/debs
# Exit code: 0 ok, 1 failure (message on stderr).
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
LAB_LOG_PREFIX=fetch-kernel

die() { lab_log "$*"; exit 1; }
ARCH=amd64
FLAVOUR=amd64 # the generic flavour: the -cloud one has no 9p, which the lab mounts the host root with

REFRESH=0 PRINT=kver SPEC=""
while [ $# -gt 0 ]; do
	case "$1" in
	--refresh) REFRESH=1 ;;
	--root) PRINT=root ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option $1" ;;
	*) [ -z "$SPEC" ] || die "only one SPEC"; SPEC=$1 ;;
	esac
	shift
done
SPEC=${SPEC:-$LAB_DEFAULT_KERNEL}
read -r SUITE MIN FALLBACK <<<"$(lab_spec_suites "$SPEC")" || die "'$SPEC' is not a suite or alias (see test/lab/lib.sh)"
[ -n "${SUITE:-}" ] || die "'$SPEC' is not a suite or alias (see test/lab/lib.sh)"
SUITES="$SUITE ${FALLBACK:-}"

for c in apt-get apt-cache dpkg dpkg-deb flock; do command -v "$c" >/dev/null || die "$c missing"; done
DEPMOD=$(command -v depmod || echo /sbin/depmod)
[ -x "$DEPMOD" ] || die "depmod missing (apt-get install kmod)"
CACHE=$LAB_CACHE/kernels
mkdir -p "$CACHE" || die "cannot create $CACHE"
CACHE=$(cd "$CACHE" && pwd -P)

# One fetch at a time per cache (CI jobs or a test and a bench started together).
exec 8>"$CACHE/.lock"
flock -w 900 8 || die "timed out waiting for $CACHE/.lock"

out() { # kver
	if [ "$PRINT" = root ]; then echo "$CACHE/$1/root"; else echo "$1"; fi
	exit 0
}
version_ok() { # kver -> 0 if its upstream version is >= MIN and, for 6.1, is 6.1.x
	local up=${1%%[+-]*}
	[ "$MIN" = 0 ] && return 0
	dpkg --compare-versions "$up" ge "$MIN" || return 1
	# "6.1" means Debian 12's kernel line, not just "at least 6.1"
	[ "$MIN" != 6.1 ] || case "$up" in 6.1.*) return 0 ;; *) return 1 ;; esac
}
extracted() { [ -f "$CACHE/$1/root/.ktls-lab-complete" ]; }

# ---- already fetched? (no network) --------------------------------------------------
RESOLVED=$CACHE/resolved-$SUITE
CACHED=""
if [ -s "$RESOLVED" ]; then
	read -r _suite kver _ver < "$RESOLVED"
	if [ -n "${kver:-}" ] && extracted "$kver" && version_ok "$kver"; then
		CACHED=$kver
		days=${KTLS_LAB_REFRESH_DAYS:-7}
		stale=0
		[ "$days" != 0 ] && [ -n "$(find "$RESOLVED" -mtime +"$days" 2>/dev/null)" ] && stale=1
		if [ "$REFRESH" = 0 ] && [ "$stale" = 0 ]; then
			lab_log "$SPEC: $kver (cached; $_suite $_ver)"
			out "$kver"
		fi
		[ "$stale" = 1 ] && lab_log "$SPEC: cached resolution is older than $days days: asking the archive again"
	fi
fi
fallback() { # message: use the cached kernel if there is one
	if [ -n "$CACHED" ]; then
		lab_log "$*; using the cached $CACHED"
		touch "$RESOLVED" # don't retry on every run
		out "$CACHED"
	fi
	die "$*"
}

# ---- the system's Debian archive entry (URI + keyring) ----------------------------
# Prints "URI KEYRING" (KEYRING "-" if none) of the first deb entry whose
# suites include CODENAME exactly (bookworm, not bookworm-security).
apt_origin() {
	local codename=$1 f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v cn="$codename" '
			function flush() {
				if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " cn " ") && uri != "") {
					print uri, (signed == "" || signed ~ /BEGIN PGP/ ? "-" : signed); found = 1; exit
				}
				types = suites = signed = uri = enabled = field = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ { if (field == "signed-by") signed = signed " " $0; next }
			{
				field = tolower($0); sub(/:.*/, "", field)
				val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
				if (field == "types") types = val
				else if (field == "uris") { uri = val; sub(/[ \t].*/, "", uri) }
				else if (field == "suites") suites = val
				else if (field == "signed-by") signed = val
				else if (field == "enabled") enabled = tolower(val)
			}
			END { if (!found) flush() }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk -v cn="$codename" '
			$1 == "deb" {
				signed = "-"; i = 2
				if ($2 ~ /^\[/) {
					for (; i <= NF; i++) {
						o = $i; gsub(/[][]/, "", o)
						if (o ~ /^signed-by=/) { sub(/^signed-by=/, "", o); signed = o }
						if ($i ~ /\]$/) { i++; break }
					}
				}
				if ($(i + 1) == cn) { print $i, signed; exit }
			}' "$f"
	done
}
if [ -n "${KTLS_LAB_APT_URI:-}" ]; then
	URI=$KTLS_LAB_APT_URI
	KEYRING=${KTLS_LAB_APT_KEYRING:--}
else
	CODENAME=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")
	[ -n "$CODENAME" ] || fallback "no VERSION_CODENAME in /etc/os-release: set KTLS_LAB_APT_URI"
	read -r URI KEYRING < <(apt_origin "$CODENAME" | head -1)
	[ -n "${URI:-}" ] || fallback "no deb entry for suite '$CODENAME' in /etc/apt/sources.list{,.d}: set KTLS_LAB_APT_URI"
	KEYRING=${KTLS_LAB_APT_KEYRING:-$KEYRING}
fi
URI=${URI%/}
if [ "$KEYRING" != - ] && [ ! -r "$KEYRING" ]; then
	lab_log "keyring $KEYRING not readable: using apt's default trusted keys"
	KEYRING=-
fi

# ---- private apt state ----------------------------------------------------------------
APTTMP=$(mktemp -d "${TMPDIR:-/tmp}/ktls-lab-apt.XXXXXX") || die mktemp
chmod 755 "$APTTMP" # as root, apt downloads as the unprivileged user _apt
trap 'rm -rf "$APTTMP"' EXIT
apt_cmd() { # suite tool args...
	local d=$APTTMP/$1 t=$2
	shift 2
	# a hung mirror must not hang the lab: every apt call has a deadline
	timeout 600 "$t" -q -o Dir::Etc::sourcelist="$d/sources.list" -o Dir::Etc::sourceparts="$d/empty" \
		-o Dir::Etc::preferences="$d/empty/none" -o Dir::Etc::preferencesparts="$d/empty" \
		-o Dir::State::Lists="$d/lists" -o Dir::State::status="$d/status" \
		-o Dir::State::extended_states="$d/extended_states" \
		-o Dir::Cache="$d/cache" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
		-o APT::Architecture="$ARCH" -o APT::Architectures="$ARCH" -o Acquire::Languages=none \
		-o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Acquire::https::Timeout=60 \
		"$@"
}
apt_setup() { # suite
	local d=$APTTMP/$1 opts="arch=$ARCH"
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/empty" || die "cannot create $d"
	: > "$d/status"
	[ "$KEYRING" = - ] || opts="$opts signed-by=$KEYRING"
	echo "deb [$opts] $URI $1 main" > "$d/sources.list"
}
newest_version() { # suite pkg -> newest Version of pkg in that suite
	apt_cmd "$1" apt-cache show "$2" 2>/dev/null | sed -n 's/^Version: //p' | {
		best=""
		while read -r v; do
			if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
		done
		echo "$best"
	}
}
depends_of() { # suite pkg version -> "name version" per dependency (first alternative; version "-" if unversioned)
	apt_cmd "$1" apt-cache show "$2=$3" 2>/dev/null | awk '
		/^Depends:/ { sub(/^Depends:[ \t]*/, ""); n = split($0, d, /,[ \t]*/)
			for (i = 1; i <= n; i++) { a = d[i]; sub(/[ \t]*\|.*/, "", a)
				name = a; sub(/[ \t(].*/, "", name); ver = "-"
				if (a ~ /\(= /) { ver = a; sub(/.*\(= /, "", ver); sub(/\).*/, "", ver) }
				print name, ver }
			exit }'
}

# ---- resolve ---------------------------------------------------------------------------
t0=$(lab_now)
KVER="" PKGS=() USED=""
for s in $SUITES; do
	apt_setup "$s"
	lab_log "$SPEC: apt-get update for $s (archive and keyring from this machine's apt sources)"
	if ! apt_cmd "$s" apt-get update > "$APTTMP/$s/update.log" 2>&1; then
		tail -5 "$APTTMP/$s/update.log" >&2
		lab_log "apt-get update for $s failed"
		continue
	fi
	mver=$(newest_version "$s" "linux-image-$FLAVOUR")
	[ -n "$mver" ] || { lab_log "$s: no linux-image-$FLAVOUR"; continue; }
	img=$(depends_of "$s" "linux-image-$FLAVOUR" "$mver" | awk '$1 ~ /^linux-image-[0-9]/ { print; exit }')
	[ -n "$img" ] || { lab_log "$s: linux-image-$FLAVOUR $mver has no linux-image-<kver> dependency"; continue; }
	read -r iname iver <<<"$img"
	[ "$iver" != - ] || iver=$(newest_version "$s" "$iname")
	kver=${iname#linux-image-}
	if ! version_ok "$kver"; then
		lab_log "$s: newest kernel is $kver ($iver), not what '$SPEC' needs (>= $MIN)"
		continue
	fi
	PKGS=("$iname=$iver")
	while read -r dname dver; do
		case "$dname" in *-"$kver")
			[ "$dver" != - ] || dver=$(newest_version "$s" "$dname")
			PKGS+=("$dname=$dver") ;;
		esac
	done < <(depends_of "$s" "$iname" "$iver")
	KVER=$kver USED=$s
	lab_log "$s: linux-image-$FLAVOUR $mver -> kernel $kver: ${PKGS[*]}"
	break
done
[ -n "$KVER" ] || fallback "no kernel for '$SPEC' found in: $SUITES"

# ---- download + unpack (only if not there yet) -----------------------------------------
KD=$CACHE/$KVER
if extracted "$KVER"; then
	lab_log "$KD/root is already unpacked: nothing to download"
else
	# Downloaded into the temp dir: as root, apt downloads as the user _apt,
	# which cannot enter a cache under /root (apt would warn and go unsandboxed).
	dl=$APTTMP/debs
	rm -rf "$KD/root" "$KD"/root.tmp.*
	mkdir -p "$dl" "$KD" || die "cannot create $dl or $KD"
	if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
	lab_log "downloading ${#PKGS[@]} packages"
	(cd "$dl" && apt_cmd "$USED" apt-get download "${PKGS[@]}") >&2 ||
		fallback "apt-get download failed"
	t1=$(lab_now)
	tmp=$KD/root.tmp.$$
	mkdir -p "$tmp" || die "cannot create $tmp"
	for deb in "$dl"/*.deb; do
		dpkg -x "$deb" "$tmp" || die "dpkg -x $deb failed"
	done
	# kmod 30 (bookworm) reads <root>/lib/modules; 7.x packages use usr/lib/modules
	[ -e "$tmp/lib" ] || [ -L "$tmp/lib" ] || ln -s usr/lib "$tmp/lib"
	[ -d "$tmp/lib/modules/$KVER" ] || die "no lib/modules/$KVER in the packages"
	ls "$tmp/lib/modules/$KVER/kernel/net/tls/tls.ko"* >/dev/null 2>&1 || lab_log "warning: no tls.ko in $KVER (built in?)"
	[ -f "$tmp/lib/modules/$KVER/vmlinuz" ] || [ -f "$tmp/boot/vmlinuz-$KVER" ] || die "no vmlinuz in the packages"
	"$DEPMOD" -b "$tmp" "$KVER" || die "depmod -b $tmp $KVER failed"
	printf '%s\n' "suite $USED" "${PKGS[@]}" > "$tmp/.ktls-lab-complete"
	mv "$tmp" "$KD/root" || die "mv $tmp $KD/root"
	if [ "${KTLS_LAB_KEEP_DEBS:-0}" = 1 ]; then rm -rf "$KD/debs"; mv "$dl" "$KD/debs"; fi
	lab_log "$KVER: resolve+download $(lab_elapsed "$t0" "$t1") s, unpack+depmod $(lab_elapsed "$t1") s, $(du -sm "$KD/root" | cut -f1) MB in $KD/root"
fi
echo "$USED $KVER ${PKGS[0]#*=}" > "$RESOLVED"
out "$KVER"
