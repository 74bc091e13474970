#!/usr/bin/env bash
# venv.sh VENV SRC_DIR [EXTRA...]: make (or upgrade) the doorbell's venv in VENV from the
# checkout SRC_DIR, on top of the distribution's Python, PyAV and numpy.
#
# install-pi.sh runs it with the `pi` extra; the distro tests (tests/distro/run.sh) run
# the very same script inside Debian trees with the `test` extra (the tools that run the suite; the `pi`
# extra's lgpio exists as a Debian package only on Raspberry Pi OS).
#
# PyAV must exist once in the process: picamera2 imports `av` too, and a venv copy would
# shadow the distribution's python3-av that picamera2 is built against (a second FFmpeg
# build loaded beside the system's). Likewise numpy: the distribution's compiled modules
# (simplejpeg, python3-av) are built against the system numpy, and a newer numpy in the
# venv breaks them. So:
#   a) the venv sees the system site packages;
#   b) the project is installed with --no-deps, so pip never resolves its `av` pin;
#   c) its requirements (with the EXTRAs) are read back from the installed metadata,
#      `av` dropped, and installed under a constraints file that pins numpy to the
#      system's version (pip then picks an opencv-python-headless built for it);
#   d) python-geohash is pinned to 0.8.5 (a C++ extension that builds with g++): 0.9 has
#      x86-64 wheels only and its source build needs a Rust toolchain.
#   e) c2pa-python (Content Credentials on shares) comes as one py3-none wheel per
#      architecture, manylinux_2_28 for x86_64 and aarch64 (glibc 2.28+: Debian 12 has
#      2.36), so any Python 3.10+ takes it; there is none for 32-bit ARM, where its
#      source build would need a Rust toolchain (install-pi.sh wants arm64 anyway).
# A check at the end refuses the venv if `av` or numpy resolve anywhere but the system
# (and picamera2 too, where the system has it).
set -euo pipefail

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'venv.sh: error: %s\n' "$*" >&2
    exit 1
}

(($# >= 2)) || die "usage: venv.sh VENV SRC_DIR [EXTRA...]"
venv=$1
src_dir=$2
shift 2
extras=("$@")
[[ -f $src_dir/setup.cfg ]] || die "$src_dir is not a doorbell checkout (no setup.cfg)"

/usr/bin/python3 -c 'import av, numpy' 2>/dev/null ||
    die "the system Python lacks PyAV or numpy: apt-get install python3-av python3-numpy"

if [[ -x $venv/bin/python ]]; then
    grep -Eq '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" ||
        die "$venv exists without system site packages (picamera2 would be missing): remove it and run this again"
    say "reusing the venv in $venv"
else
    say "creating the venv in $venv (with the system site packages)"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
system_numpy="$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')"
cat >"$workdir/constraints.txt" <<EOF
numpy==$system_numpy
python-geohash==0.8.5
EOF

say "installing the doorbell package from $src_dir"
"$venv/bin/pip" install --quiet --no-deps --force-reinstall "$src_dir"

"$venv/bin/python" - "$workdir/requirements.txt" "${extras[@]}" <<'EOF'
"""Write the installed doorbell package's requirements, with the extras named on the
command line and without PyAV, one per line."""
import re
import sys
from importlib.metadata import requires

EXCLUDED = {"av"}
wanted = set(sys.argv[2:])
lines = []
for requirement in requires("doorbell") or []:
    spec, _, marker = requirement.partition(";")
    name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0).lower()
    if name in EXCLUDED:
        continue
    extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    if extra:
        if extra.group(1) not in wanted:
            continue
        marker = ""
    lines.append(f"{spec.strip()}; {marker.strip()}" if marker.strip() else spec.strip())
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write("\n".join(lines) + "\n")
EOF

# lgpio (the `pi` extra, gpiozero's pin backend): Raspberry Pi OS has it as python3-lgpio,
# which the venv sees and pip then leaves alone. Elsewhere (plain Debian arm64, which has
# no python3-lgpio) PyPI has wheels only up to Python 3.12, so pip builds its source;
# PYPI=1 tells lgpio's own setup.py to link its C library in statically (Debian has no
# liblgpio either), and swig must be there to generate the wrapper.
pip_env=()
if grep -q '^lgpio' "$workdir/requirements.txt" && ! /usr/bin/python3 -c 'import lgpio' 2>/dev/null; then
    command -v swig >/dev/null ||
        die "lgpio must be built from source here (no python3-lgpio): apt-get install python3-lgpio on Raspberry Pi OS, or swig elsewhere"
    say "building lgpio from source (the system has no python3-lgpio)"
    pip_env=(PYPI=1)
fi

say "installing its dependencies (PyAV and numpy come from the distribution)"
env "${pip_env[@]}" "$venv/bin/pip" install --quiet -c "$workdir/constraints.txt" \
    -r "$workdir/requirements.txt"

# An earlier install may have left a PyAV in the venv; it must go (it would shadow
# python3-av). pip does not touch the system's copy from inside the venv.
av_path="$("$venv/bin/python" -c 'import av; print(av.__file__)')"
if [[ $av_path == "$venv"/* ]]; then
    say "removing a PyAV copy from the venv: $av_path"
    "$venv/bin/pip" uninstall --quiet -y av
fi
modules=(av numpy)
/usr/bin/python3 -c 'import picamera2' 2>/dev/null && modules+=(picamera2)
"$venv/bin/python" - "${modules[@]}" <<'EOF' || die "the venv does not use the system's PyAV and numpy"
import importlib
import sys

for name in sys.argv[1:]:
    module = importlib.import_module(name)
    if not module.__file__.startswith("/usr/lib/python3/"):
        sys.exit(f"{name} comes from {module.__file__}, not from the distribution")
import av
import numpy

print(
    f"==> using Python {sys.version.split()[0]}, the distribution's PyAV {av.__version__}"
    f" and numpy {numpy.__version__}"
)
EOF
