#!/usr/bin/env bash
# install-pi.sh: install doorbelld as a systemd service on 64-bit Raspberry Pi OS
# (Debian 13 "trixie" or Debian 12 "bookworm" based), from the checkout this script
# lives in.
#
# Safe to run again: it installs what is missing, upgrades the program from the
# checkout, keeps an existing /etc/doorbell/doorbell.yaml and restarts the service.
#
# Layout it produces:
#   /opt/doorbell                      Python venv (with the system site packages)
#   /etc/systemd/system/doorbell.service
#   /etc/sysusers.d/doorbell.conf      user `doorbell`, group `gpio` if missing
#   /etc/tmpfiles.d/doorbell.conf      /etc/doorbell (root:doorbell 0750)
#   /etc/doorbell/doorbell.yaml        config (root:doorbell 0640), never overwritten
#   /var/lib/doorbell                  footage, state, device keys (doorbell, 0700)
set -euo pipefail

readonly VENV=/opt/doorbell
readonly UNIT_DIR=/etc/systemd/system
readonly CONFIG=/etc/doorbell/doorbell.yaml
readonly SERVICE=doorbell.service

usage() {
    cat <<'EOF'
Usage: sudo systemd/install-pi.sh [--with-mqtt-tools] [--no-start]

Installs the doorbell daemon from this checkout on 64-bit Raspberry Pi OS (trixie or
bookworm):
Debian packages, a venv in /opt/doorbell, the systemd unit, the service user and
/etc/doorbell. Run it again to upgrade.

  --with-mqtt-tools   also install mosquitto-clients (mosquitto_sub/_pub, for debugging)
  --no-start          install and enable, but do not (re)start the service
  -h, --help          show this help
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'install-pi.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install-pi.sh: error: %s\n' "$*" >&2
    exit 1
}

with_mqtt_tools=0
start=1
while (($# > 0)); do
    case "$1" in
        --with-mqtt-tools) with_mqtt_tools=1 ;;
        --no-start) start=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            printf 'install-pi.sh: unknown option: %s\n' "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SRC_DIR

# --- preflight -------------------------------------------------------------------------
[[ $EUID -eq 0 ]] || die "run as root: sudo $0"
[[ -f "$SRC_DIR/setup.cfg" && -f "$SRC_DIR/systemd/$SERVICE" ]] ||
    die "$SRC_DIR does not look like a doorbell checkout (no setup.cfg or systemd/$SERVICE)"
command -v systemctl >/dev/null || die "systemd is required"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Raspberry Pi OS"

arch="$(dpkg --print-architecture)"
[[ $arch == arm64 ]] ||
    warn "architecture is $arch, not arm64: this script targets 64-bit Raspberry Pi OS"
# shellcheck source=/dev/null
codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-unknown}")"
case "$codename" in
    trixie | bookworm) ;;
    *) warn "OS release is '$codename', not trixie or bookworm (the releases this is tested on): package names may differ" ;;
esac

# --- 1. Debian packages ----------------------------------------------------------------
# python3-picamera2 brings libcamera and its Python bindings, which exist only as Debian
# packages: hence the venv below sees the system site packages.
# python3-av and python3-numpy are the builds picamera2 is built and tested against;
# the venv reuses them rather than installing its own (see step 3 and systemd/venv.sh).
# g++ and python3-dev build python-geohash's C++ extension (step 3).
packages=(python3-venv python3-picamera2 python3-av python3-numpy python3-lgpio g++ python3-dev)
((with_mqtt_tools)) && packages+=(mosquitto-clients)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
candidate() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p'; }
if ((${#missing[@]} > 0)); then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -q
    [[ -n $(candidate python3-picamera2) && $(candidate python3-picamera2) != "(none)" ]] ||
        die "python3-picamera2 is not available from apt: this script needs Raspberry Pi OS (its archive provides picamera2 and the Pi's libcamera)"
    # --no-install-recommends: picamera2 recommends the Qt/OpenGL preview stack, which a
    # headless doorbell does not need.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages already installed"
fi
version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || printf 'missing'; }
say "using $codename on $arch: Python $(/usr/bin/python3 -c 'import platform; print(platform.python_version())')," \
    "python3-av $(version python3-av), python3-numpy $(version python3-numpy)," \
    "python3-picamera2 $(version python3-picamera2)"

# --- 2. user, groups and directories ----------------------------------------------------
say "installing the service user (sysusers.d) and /etc/doorbell (tmpfiles.d)"
install -D -m 0644 "$SRC_DIR/systemd/doorbell.sysusers" /etc/sysusers.d/doorbell.conf
install -D -m 0644 "$SRC_DIR/systemd/doorbell.tmpfiles" /etc/tmpfiles.d/doorbell.conf
systemd-sysusers /etc/sysusers.d/doorbell.conf
systemd-tmpfiles --create /etc/tmpfiles.d/doorbell.conf

# --- 3. the venv and the program ------------------------------------------------------
# systemd/venv.sh (shared with the distro tests, which run the very same steps): a venv
# on the system's Python, PyAV and numpy (which picamera2 is built against).
"$SRC_DIR/systemd/venv.sh" "$VENV" "$SRC_DIR" pi || die "setting up the venv in $VENV failed"

# --- 4. configuration -------------------------------------------------------------------
fresh_config=0
if [[ -e $CONFIG ]]; then
    say "keeping the existing $CONFIG"
else
    example="$("$VENV/bin/python" -c \
        'from importlib.resources import files; print(files("firmware_config") / "doorbell.example.yaml")')"
    [[ -f $example ]] || die "the example config is missing from the package: $example"
    install -m 0640 -o root -g doorbell "$example" "$CONFIG"
    fresh_config=1
    say "wrote the example config to $CONFIG"
fi
# Check it as the service user, so a file the service cannot read fails here too.
say "checking $CONFIG"
runuser -u doorbell -- "$VENV/bin/doorbelld" --config "$CONFIG" --check-config ||
    die "$CONFIG has errors (listed above); fix them and run this script again"

# --- 5. the unit --------------------------------------------------------------------------
say "installing $UNIT_DIR/$SERVICE"
install -m 0644 "$SRC_DIR/systemd/$SERVICE" "$UNIT_DIR/$SERVICE"
systemctl daemon-reload
systemctl enable --quiet "$SERVICE"

if ((fresh_config)); then
    # The example names a placeholder broker, device id and contact; a camera should not
    # start on those. Enabled, so it starts on the next boot once edited.
    cat <<EOF

==> Installed and enabled, not started: $CONFIG is the example.
    Edit it (device.id, device.location, mqtt.url, rfa.trusted_agencies, owner.keys,
    owner.recipients; owner.button_pin must be an INDOOR button), then:
      sudo systemctl start $SERVICE
EOF
elif ((start)); then
    say "starting $SERVICE"
    # restart, not start: a second run of this script must load the upgraded program.
    systemctl reset-failed "$SERVICE" 2>/dev/null || true
    systemctl restart "$SERVICE" ||
        die "$SERVICE did not start; see: journalctl -u $SERVICE -e"
    systemctl --no-pager --lines=5 status "$SERVICE" || true
else
    say "not started (--no-start); start with: sudo systemctl start $SERVICE"
fi

cat <<EOF

==> Done. Useful commands:
    journalctl -u $SERVICE -f             the daemon's log
    sudo $VENV/bin/doorbellctl status      (or add yourself to group doorbell:
                                           sudo usermod -aG doorbell \$USER)
    sudo $SRC_DIR/systemd/uninstall-pi.sh  remove it (keeps footage, keys and config)
EOF
