#!/usr/bin/env bash
# ha_env.sh: make (once) and print the path of the Python environment with a real Home
# Assistant for tests/home_assistant. Home Assistant 2025.4.4 is the newest release whose
# test harness (pytest-homeassistant-custom-component 0.13.236) pins a Python 3.13 one;
# 2026.3 and later need Python 3.14.2. The environment is
# cached outside the checkout, like the Debian trees of tests/distro, in
# $DOORBELL_HA_CACHE (default /var/cache/doorbell-ha), and remade only when this file's
# pins change. Python 3.13 is taken from $DOORBELL_HA_PYTHON, else python3.13 on PATH,
# else pyenv's newest 3.13 (the first that runs).
set -euo pipefail

die() {
    printf 'ha_env.sh: error: %s\n' "$*" >&2
    exit 1
}

# The pins: Home Assistant itself (it pins its own dependencies exactly), and what three
# of its integrations name in their manifests: the MQTT client; the frontend, which HA
# always loads (without it HA starts in recovery mode); and PyNaCl for mobile_app, the
# companion app's integration, which the blueprint's test registers a phone with. Installed here because the test
# starts HA with --skip-pip: nothing is installed at run time.
PINS=(homeassistant==2025.4.4 paho-mqtt==2.1.0 home-assistant-frontend==20250411.0 PyNaCl==1.5.0)

cache=${DOORBELL_HA_CACHE:-/var/cache/doorbell-ha}
env="$cache/ha-2025.4.4"
stamp="$env/.installed"
want="${PINS[*]}"

if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    echo "$env"
    exit 0
fi

is_313() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null
}

find_python() {
    local candidate
    if [[ -n ${DOORBELL_HA_PYTHON:-} ]]; then
        is_313 "$DOORBELL_HA_PYTHON" || die "DOORBELL_HA_PYTHON=$DOORBELL_HA_PYTHON is not a Python 3.13"
        echo "$DOORBELL_HA_PYTHON"
        return
    fi
    # pyenv's shim for python3.13 is on PATH without working when 3.13 is not selected:
    # every candidate is asked for its version.
    local -a found=()
    command -v python3.13 >/dev/null && found+=("$(command -v python3.13)")
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
        found+=("$candidate")
    done
    for candidate in "${found[@]}"; do
        if is_313 "$candidate"; then
            echo "$candidate"
            return
        fi
    done
    die "Home Assistant 2025.4.4 needs Python 3.13 and none was found: install it (pyenv install 3.13) or name it in DOORBELL_HA_PYTHON"
}
python="$(find_python)"

SUDO=""
if ! mkdir -p "$cache" 2>/dev/null || [[ ! -w $cache ]]; then
    command -v sudo >/dev/null || die "cannot write $cache: run as root, install sudo, or set DOORBELL_HA_CACHE to a folder you own"
    SUDO=sudo
    $SUDO mkdir -p "$cache"
    $SUDO chown "$(id -u):$(id -g)" "$cache"
fi

exec 9>"$cache/.lock"
flock 9 # one build at a time; a second caller waits and then finds it made
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    echo "$env"
    exit 0
fi
echo "ha_env.sh: making Home Assistant's environment in $env (once; a few minutes)" >&2
rm -rf "$env"
"$python" -m venv "$env"
"$env/bin/pip" install -q --upgrade pip >&2
"$env/bin/pip" install -q "${PINS[@]}" >&2
printf '%s' "$want" >"$stamp"
echo "$env"
