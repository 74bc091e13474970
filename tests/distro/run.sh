#!/usr/bin/env bash
# run.sh RELEASE [ARCH] [PYTEST ARGS...]: the Pi path's proof. In a Debian RELEASE user
# space (tests/distro/rootfs.sh, cached), make the venv exactly as install-pi.sh does
# (systemd/venv.sh: the distribution's Python, PyAV and numpy) and run the recorder,
# export, share and whole-daemon tests there, in a chroot. On trixie, PyPI's picamera2
# is installed over Debian's libcamera bindings first (Debian has no python3-picamera2),
# for tests/distro/test_picamera2_api.py. DOORBELL_DISTRO_EXTRAS names the package's
# extras for the venv (default `test`, the tools that run the suite).
#
# Runs as root. All mounts live in a private mount namespace and go with it.
set -euo pipefail

die() {
    printf 'run.sh: error: %s\n' "$*" >&2
    exit 1
}

(($# >= 1)) || die "usage: run.sh RELEASE [ARCH] [PYTEST ARGS...]"
release=$1
shift
arch=amd64
if (($# > 0)) && [[ $1 == amd64 || $1 == arm64 ]]; then
    arch=$1
    shift
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache=${DOORBELL_ROOTFS_CACHE:-/var/cache/doorbell-rootfs}

tree="$("$here/rootfs.sh" "$release" "$arch")"
echo "==> $release $arch tree ready after $SECONDS s"
exec 9>"$cache/.lock-run-$release-$arch"
flock 9 # one run per tree at a time

# A fresh copy of the checkout: tracked and new files, not what .gitignore ignores. git
# lists them; where it cannot (not installed, as on a minimal Debian; a tarball without
# .git; a clone of another user's that git, run as root here, calls dubious), the
# top-level .gitignore's patterns are handed to tar instead.
checkout_files() {
    local list pattern excludes=(--exclude=./.git)
    list="$(mktemp)"
    if git -C "$repo" ls-files -z --cached --others --exclude-standard >"$list" 2>/dev/null; then
        # a tracked file deleted in the work tree is skipped, not an error
        tar -C "$repo" --no-recursion --ignore-failed-read --null -T "$list" -cf - 2>/dev/null
        rm -f "$list"
        return
    fi
    rm -f "$list"
    while read -r pattern; do
        pattern=${pattern%%#*}
        pattern=${pattern%/}
        [[ -z ${pattern// /} ]] && continue
        [[ $pattern == /* ]] && pattern=.$pattern # anchored at the top
        excludes+=("--exclude=$pattern")
    done <"$repo/.gitignore"
    tar -C "$repo" "${excludes[@]}" -cf - .
}
rm -rf "$tree/src" "$tree/opt/doorbell"
mkdir -p "$tree/src" "$cache/pip-$release-$arch" "$tree/root/.cache/pip"
checkout_files | tar -xf - -C "$tree/src"
# The tree reaches PyPI as this machine does: its resolver and its CA bundle (which may
# hold a local proxy's CA).
cp /etc/resolv.conf "$tree/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$tree/etc/ssl/certs/host-ca-certificates.crt"

if (($# == 0)); then
    set -- tests/distro tests/recorder tests/sync/test_share.py tests/cloud/test_verify.py \
        tests/integration/test_daemon_process.py tests/integration/test_end_to_end.py \
        tests/integration/test_recorder_supervision.py -n 2 --dist loadgroup
fi

# shellcheck disable=SC2016 # the inner script expands its own arguments
unshare --mount --propagation private bash -euo pipefail -c '
    tree=$1 pip_cache=$2 release=$3 arch=$4 extras=$5
    shift 5
    mount -t proc proc "$tree/proc"
    mount --rbind /dev "$tree/dev"
    mount -t tmpfs -o mode=1777,size=2g shm "$tree/dev/shm"
    mount --rbind /sys "$tree/sys"
    mount --bind "$pip_cache" "$tree/root/.cache/pip"
    rm -rf "$tree/tmp" && mkdir -m 1777 "$tree/tmp"
    in_tree() {
        chroot "$tree" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
            PATH=/opt/doorbell/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_DISABLE_PIP_VERSION_CHECK=1 \
            PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt \
            "$@"
    }
    # shellcheck disable=SC2086 # the extras are words
    in_tree /src/systemd/venv.sh /opt/doorbell /src $extras
    echo "==> venv made in $SECONDS s"
    if [[ $release == trixie && $arch == amd64 ]]; then
        numpy=$(in_tree /usr/bin/python3 -c "import numpy; print(numpy.__version__)")
        echo "==> installing PyPI picamera2 over the distribution libcamera"
        in_tree pip install --quiet --no-deps picamera2
        in_tree pip install --quiet "numpy==$numpy" PiDNG simplejpeg videodev2
    fi
    cd "$tree/src"
    in_tree /bin/sh -c "cd /src && exec python -m pytest -q -p no:cacheprovider \"\$@\"" pytest "$@"
' run "$tree" "$cache/pip-$release-$arch" "$release" "$arch" "${DOORBELL_DISTRO_EXTRAS:-test}" "$@"
