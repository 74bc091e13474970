#!/usr/bin/env bash
# pi_smoke.sh (`make pi-smoke`): the Pi's own architecture. In a Debian 13 "trixie" arm64
# user space run under qemu-user-static, make the venv as install-pi.sh does
# (systemd/venv.sh with the `pi` extra: real aarch64 wheels, python-geohash built from
# source, an opencv-python-headless that fits the system numpy), then record, export,
# and build a share and check it with the agency's verifier there, through the suite's own
# tests for those.
#
# Slow (everything runs emulated), so not part of `make test`. Runs as root; registers
# qemu's aarch64 binfmt handler if this machine has none.
set -euo pipefail

die() {
    printf 'pi_smoke.sh: error: %s\n' "$*" >&2
    exit 1
}

[[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot, binfmt_misc)"
[[ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P || -x /usr/bin/qemu-aarch64-static ]] ||
    die "qemu-user-static is not installed (apt-get install qemu-user-static)"
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -f $conf ]] || die "no $conf to register the aarch64 handler from"
    cat "$conf" >/proc/sys/fs/binfmt_misc/register
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start=$SECONDS
DOORBELL_DISTRO_EXTRAS="pi test" "$here/run.sh" trixie arm64 \
    tests/distro/test_avcompat.py \
    "tests/device/test_cli.py::test_record_then_clip_round_trip_and_the_errors" \
    "tests/sync/test_share.py::test_named_share_decrypts_verifies_and_holds_exactly_the_window" \
    "tests/cloud/test_verify.py::test_a_good_named_share_verifies" \
    "tests/cloud/test_verify.py::test_a_frame_outside_the_approved_window_fails"
# What the venv holds on arm64: the wheels pip chose and the two source builds, each loaded.
tree="$("$here/rootfs.sh" trixie arm64)"
chroot "$tree" /opt/doorbell/bin/python -c '
from importlib.metadata import version
import cv2, geohash, lgpio
names = ("av", "numpy", "opencv-python-headless", "python-geohash", "lgpio", "cryptography",
         "pyrage", "paho-mqtt", "gpiozero")
print("==> on arm64: " + ", ".join(f"{name} {version(name)}" for name in names))
'
printf '==> pi-smoke passed in %d s\n' $((SECONDS - start))
