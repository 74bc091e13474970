#!/usr/bin/env bash
# rootfs.sh RELEASE [ARCH]: print the path of a Debian RELEASE user space (bookworm,
# trixie; ARCH amd64 by default, arm64 through qemu-user-static) holding the packages of
# tests/distro/packages.txt, building it with debootstrap when it is missing.
#
# Trees are cached outside the checkout, in $DOORBELL_ROOTFS_CACHE (default
# /var/cache/doorbell-rootfs):
#   base-RELEASE-ARCH/        debootstrap --variant=minbase, built once
#   RELEASE-ARCH-KEY/         a copy of the base with the packages installed; KEY is a
#                             hash of the release, architecture and package list, so a
#                             changed list builds a new tree (and the old one is removed)
# The mirror is $DEBIAN_MIRROR, else the first Debian archive in this machine's apt
# sources. All mounts happen in a private mount namespace (unshare), so they vanish with
# it even when the build is killed. Needs root, debootstrap (and for arm64
# qemu-user-static with binfmt_misc).
set -euo pipefail

die() {
    printf 'rootfs.sh: error: %s\n' "$*" >&2
    exit 1
}
say() { printf '==> %s\n' "$*" >&2; }

(($# >= 1 && $# <= 2)) || die "usage: rootfs.sh RELEASE [ARCH]"
release=$1
arch=${2:-amd64}
case "$release" in bookworm | trixie) ;; *) die "unsupported release: $release" ;; esac
case "$arch" in amd64 | arm64) ;; *) die "unsupported architecture: $arch" ;; esac
[[ $EUID -eq 0 ]] || die "building a Debian tree needs root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache=${DOORBELL_ROOTFS_CACHE:-/var/cache/doorbell-rootfs}
mkdir -p "$cache"

# The package list for this release: comments dropped, `release:` lines kept for it.
packages=()
while read -r line; do
    line=${line%%#*}
    [[ -z ${line// /} ]] && continue
    if [[ $line == *:* ]]; then
        [[ ${line%%:*} == "$release" ]] || continue
        line=${line#*:}
    fi
    packages+=("${line//[[:space:]]/}")
done <"$here/packages.txt"

key="$(printf '%s\n' "$release" "$arch" "${packages[@]}" | sha256sum | cut -c1-12)"
tree="$cache/$release-$arch-$key"
base="$cache/base-$release-$arch"

exec 9>"$cache/.lock-$release-$arch"
flock 9 # one build of a release at a time; a second caller waits, then reuses it

if [[ -f $tree/.doorbell-complete ]]; then
    printf '%s\n' "$tree"
    exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ')" || true
fi
[[ -n $mirror ]] || die "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"

if [[ ! -f $base/.doorbell-complete ]]; then
    if [[ $arch != "$(dpkg --print-architecture)" ]]; then
        [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] ||
            die "no qemu-aarch64 binfmt handler: apt-get install qemu-user-static binfmt-support"
    fi
    say "debootstrap $release ($arch) from $mirror into $base"
    rm -rf "$base"
    debootstrap --variant=minbase --arch="$arch" "$release" "$base" "$mirror" >&2 ||
        die "debootstrap $release failed"
    touch "$base/.doorbell-complete"
fi

say "installing ${#packages[@]} packages into a copy of $base"
rm -rf "$tree.tmp"
cp -a "$base" "$tree.tmp"
rm -f "$tree.tmp/.doorbell-complete"
cp /etc/resolv.conf "$tree.tmp/etc/resolv.conf"
# shellcheck disable=SC2016 # the inner script expands its own arguments
unshare --mount --propagation private bash -euo pipefail -c '
    tree=$1
    shift
    mount -t proc proc "$tree/proc"
    mount --rbind /dev "$tree/dev"
    mount --rbind /sys "$tree/sys"
    chroot "$tree" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$tree" \
        apt-get install -y -qq --no-install-recommends "$@"
    chroot "$tree" apt-get clean
' rootfs "$tree.tmp" "${packages[@]}" >&2 || die "installing the packages into $release failed"

# Older trees of this release and architecture (another package list) go.
for old in "$cache/$release-$arch-"*; do
    [[ $old == "$tree.tmp" || ! -d $old ]] && continue
    rm -rf "$old"
done
touch "$tree.tmp/.doorbell-complete"
mv "$tree.tmp" "$tree"
printf '%s\n' "$tree"
