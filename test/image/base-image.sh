#!/usr/bin/env bash
# Builds, offline, a stand-in for the Dockerfile's base image and tags it with the exact name the
# Dockerfile's FROM uses, so `podman build` never pulls from a registry.
#
# The stand-in is what node:24-bookworm-slim is made of: a Debian minbase rootfs (debootstrap from
# the Debian mirror this machine's apt is configured with — read at run time, never written into
# the repo) plus a Node binary of the major the image name asks for, this machine's npm, and that
# Node's headers under /usr/local like the upstream image lays them out.
#
# The Node comes from the npm registry, not from this machine's apt: the first of $KTLS_BASE_NODE,
# the checkout's node_modules/.bin/node (the `node` devDependency that `npm ci` installs) and the
# `node` on PATH whose major is the image's (node:24-... needs a v24.x).
#
# Cached: the image carries a label holding a key over (codename, node version, this script); a
# second run with the same key does nothing. An image of that name that lacks our label is a real
# upstream image: it is used as-is and never overwritten.
#
# Usage: base-image.sh IMAGE_NAME        (prints the image name on stdout when ready)
set -euo pipefail

image=${1:?usage: base-image.sh IMAGE_NAME}
log() { printf 'base-image: %s\n' "$*" >&2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")
# node:24-bookworm-slim -> 24 (the upstream tag scheme: <major>[.<minor>...]-<codename>[-slim])
want_major=$(sed -nE 's|^(.*/)?node:([0-9]+)([.-].*)?$|\2|p' <<<"${image%@*}")
[[ -n "$want_major" ]] || { log "cannot tell the Node major from the image name '$image' (expected node:<major>-...)"; exit 1; }
node_bin="" tried=()
for cand in "${KTLS_BASE_NODE:-}" "$repo/node_modules/.bin/node" "$(command -v node || true)"; do
  [[ -n "$cand" && -x "$cand" ]] || continue
  v=$("$cand" --version 2>/dev/null || true)
  tried+=("$cand=${v:-?}")
  if [[ "$v" == "v$want_major."* ]]; then node_bin=$(readlink -f "$cand"); break; fi
done
script_sum=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
label=io.github.ktls-sidecar.test-base
if [[ -z "$node_bin" ]]; then
  # No Node of that major here (a checkout before npm ci): a stand-in this script already built
  # for it still serves.
  have=$(podman image inspect --format "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null || true)
  if [[ "$have" == "${codename}/v${want_major}."*"/${script_sum}" ]]; then
    log "cached ($have; no Node $want_major here to compare with)"; printf '%s\n' "$image"; exit 0
  fi
  log "no Node $want_major for $image (tried: ${tried[*]:-nothing}); run npm ci (it installs the node devDependency) or set KTLS_BASE_NODE"
  exit 1
fi
node_version=$("$node_bin" --version)
key="${codename}/${node_version}/${script_sum}"

if podman image exists "$image"; then
  have=$(podman image inspect --format "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null || true)
  if [[ "$have" == "$key" ]]; then
    log "cached ($key)"; printf '%s\n' "$image"; exit 0
  fi
  if [[ -z "$have" || "$have" == "<no value>" ]]; then
    log "using existing upstream image $image (not built by this script)"; printf '%s\n' "$image"; exit 0
  fi
  log "stale stand-in ($have), rebuilding"
fi

# The mirror: the first URI of an apt source that serves this codename. deb822 (*.sources) first,
# then one-line sources.list entries.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk -v want="$codename" '
      BEGIN { RS=""; FS="\n" }
      {
        uris=""; suites=""; types=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i);   uris=$i }
          if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); suites=" " $i " " }
          if ($i ~ /^Types:/)  { types=$i }
        }
        if (types ~ /deb([ \t]|$)/ && suites ~ (" " want " ")) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    awk -v want="$codename" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                          if ($(i + 1) == want) { print $i; exit } }' "$f"
  done
}
mirror=$(find_mirror | head -n1)
[[ -n "$mirror" ]] || { log "no apt source for '$codename' found in /etc/apt"; exit 1; }
log "debootstrap $codename from the apt-configured mirror"

work=$(mktemp -d /var/tmp/ktls-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
debootstrap --variant=minbase "$codename" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2; exit 1; }

# Node where the upstream image has it: /usr/local/{bin,lib/node_modules,include}.
install -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mkdir -p "$rootfs/usr/local/lib/node_modules" "$rootfs/usr/local/include"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
# Headers of exactly this Node (native/build.mjs checks the same): beside the binary (tarballs,
# node-<os>-<arch> packages), in the npm `node` package's node-<os>-<arch> dependency (its bin/node
# is a hard link to that one's), or the distribution's.
headers_version() {
  awk '/^#define NODE_(MAJOR|MINOR|PATCH)_VERSION /{v = v (v == "" ? "" : ".") $3} END {print v}' "$1/node_version.h" 2>/dev/null
}
node_prefix=$(dirname "$(dirname "$node_bin")")
node_headers=""
for cand in "$node_prefix/include/node" "$node_prefix"/node_modules/node-*/include/node /usr/include/node /usr/local/include/node; do
  if [[ -f "$cand/node.h" && "$(headers_version "$cand")" == "${node_version#v}" ]]; then node_headers=$cand; break; fi
done
[[ -n "$node_headers" ]] || { log "headers of node $node_version not found (beside $node_bin or in /usr/include/node)"; exit 1; }
cp -a "$node_headers" "$rootfs/usr/local/include/node"
# Smaller image, same as upstream's slim: no apt lists, no docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

tar -C "$rootfs" -c . | podman import --quiet \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV NODE_VERSION=${node_version#v}" \
  --change "LABEL $label=$key" \
  --change 'CMD ["node"]' \
  - "$image" >/dev/null
log "built $image ($key)"
printf '%s\n' "$image"
